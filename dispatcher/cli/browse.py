"""`scaleout folders|projects|packages list|show`: what is deployed, its versions, its
parameters (types, defaults, and where each value comes from), and `projects
set-parameter|clear-parameter` (SSIS set_object_parameter_value and
clear_object_parameter_value)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.text import Text

from dispatcher.cli import render_objects
from dispatcher.cli.common import FolderOpt, JsonFlag, emit, opt, out, session

folders_app = typer.Typer(help="Catalog folders.", no_args_is_help=True)
projects_app = typer.Typer(
    help="Deployed projects: versions, parameters, server values.", no_args_is_help=True
)
packages_app = typer.Typer(help="Packages of deployed projects.", no_args_is_help=True)

AnyFolder = Annotated[
    str | None, opt("--folder", env="SCALEOUT_FOLDER", help="only this catalog folder")
]
AnyProject = Annotated[
    str | None, opt("--project", env="SCALEOUT_PROJECT", help="only this project")
]
ProjectOpt = Annotated[str, opt("--project", env="SCALEOUT_PROJECT", help="project name")]
Name = Annotated[str, typer.Argument(help="its name")]


@folders_app.command("list")
def folders_list(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Folders, with how many projects and environments each holds."""
    with session(ctx) as so:
        rows = so.folders()
    emit(rows, as_json, render_objects.folders_table(rows))


@folders_app.command("show")
def folders_show(ctx: typer.Context, name: Name, as_json: JsonFlag = False) -> None:
    """One folder and its projects."""
    with session(ctx) as so:
        row = so.folder(name)
        projects = so.projects(name)
    if as_json:
        emit({"folder": row, "projects": projects}, as_json, "")
        return
    out.print(render_objects.folders_table([row]))
    out.print(render_objects.projects_table(projects))


@projects_app.command("list")
def projects_list(ctx: typer.Context, folder: AnyFolder = None, as_json: JsonFlag = False) -> None:
    """Projects: current version, when deployed, packages."""
    with session(ctx) as so:
        rows = so.projects(folder)
    emit(rows, as_json, render_objects.projects_table(rows))


@projects_app.command("show")
def projects_show(
    ctx: typer.Context, name: Name, folder: FolderOpt, as_json: JsonFlag = False
) -> None:
    """A project: its versions and its parameters (types, defaults, where values come
    from: the manifest, a server value, or an environment variable)."""
    with session(ctx) as so:
        row = so.project(folder, name)
    emit(row, as_json, render_objects.project_detail(row))


PackageOpt = Annotated[
    str | None,
    opt("--package", env="SCALEOUT_PACKAGE", help="a package parameter's package (else project)"),
]


@projects_app.command("set-parameter")
def projects_set_parameter(  # noqa: PLR0917  # typer passes options by keyword
    ctx: typer.Context,
    parameter: Annotated[str, typer.Argument(help="the parameter's name")],
    value: Annotated[str, typer.Argument(help="a literal, or with --reference a variable name")],
    folder: FolderOpt,
    project: ProjectOpt,
    package: PackageOpt = None,
    reference: Annotated[
        bool,
        opt(
            "--reference",
            env="SCALEOUT_REFERENCED",
            help="VALUE names an environment variable (value_type 'R'), resolved through "
            "the execution's --reference",
        ),
    ] = False,
) -> None:
    """Set a parameter's server value (SSIS set_object_parameter_value); redeploys keep it."""
    object_type = 30 if package else 20
    with session(ctx) as so:
        so.set_object_parameter_value(
            object_type, folder, project, parameter, value, package, "R" if reference else "V"
        )
    what = f"environment variable {value}" if reference else "a server value"
    out.print(Text(f"parameter {parameter} of {folder}/{project} now takes {what}"))


@projects_app.command("clear-parameter")
def projects_clear_parameter(
    ctx: typer.Context,
    parameter: Annotated[str, typer.Argument(help="the parameter's name")],
    folder: FolderOpt,
    project: ProjectOpt,
    package: PackageOpt = None,
) -> None:
    """Back to the manifest's default (SSIS clear_object_parameter_value)."""
    with session(ctx) as so:
        so.clear_object_parameter_value(folder, project, 30 if package else 20, package, parameter)
    out.print(Text(f"parameter {parameter} of {folder}/{project} takes its default again"))


@packages_app.command("list")
def packages_list(
    ctx: typer.Context,
    folder: AnyFolder = None,
    project: AnyProject = None,
    as_json: JsonFlag = False,
) -> None:
    """Packages of the projects' current versions."""
    with session(ctx) as so:
        rows = so.packages(folder, project)
    emit(rows, as_json, render_objects.packages_table(rows))


@packages_app.command("show")
def packages_show(
    ctx: typer.Context,
    name: Name,
    folder: FolderOpt,
    project: ProjectOpt,
    as_json: JsonFlag = False,
) -> None:
    """A package and its parameters."""
    with session(ctx) as so:
        row = so.package(folder, project, name)
    emit(row, as_json, render_objects.package_detail(row))
