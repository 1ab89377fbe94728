"""`scaleout environments ...`: SSIS environments, their variables and the projects'
references to them (catalog.create_environment, create_environment_variable,
create_environment_reference, ...)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.text import Text

from dispatcher.cli import render_objects
from dispatcher.cli.common import FolderOpt, JsonFlag, emit, opt, out, session

environments_app = typer.Typer(
    help="Environments: named sets of typed variables a project's parameters can reference "
    "(one project, DEV / TEST / PROD values).",
    no_args_is_help=True,
)
variables_app = typer.Typer(
    help="An environment's variables (typed; sensitive ones stored encrypted).",
    no_args_is_help=True,
)
references_app = typer.Typer(
    help="A project's references to environments; `executions create --reference ID` uses one.",
    no_args_is_help=True,
)
environments_app.add_typer(variables_app, name="variables")
environments_app.add_typer(references_app, name="references")

EnvName = Annotated[str, typer.Argument(help="the environment's name")]
VarName = Annotated[str, typer.Argument(help="the variable's name")]
Value = Annotated[
    str,
    typer.Argument(
        help="the value, as text (checked against the type); `-` reads it from stdin, so a "
        "sensitive value stays out of the shell history and the process list"
    ),
]
AnyFolder = Annotated[
    str | None, opt("--folder", env="SCALEOUT_FOLDER", help="only this catalog folder")
]


def _value(text: str) -> str:
    return sys.stdin.readline().rstrip("\n") if text == "-" else text


# -- environments ---------------------------------------------------------------------------


@environments_app.command("list")
def environments_list(
    ctx: typer.Context, folder: AnyFolder = None, as_json: JsonFlag = False
) -> None:
    """Environments, by folder: how many variables and references each has."""
    with session(ctx) as so:
        rows = so.environments(folder)
    emit(rows, as_json, render_objects.environments_table(rows))


@environments_app.command("show")
def environments_show(
    ctx: typer.Context, name: EnvName, folder: FolderOpt, as_json: JsonFlag = False
) -> None:
    """One environment: its variables (sensitive values masked) and the references to it."""
    with session(ctx) as so:
        row = so.environment(folder, name)
    emit(row, as_json, render_objects.environment_detail(row))


@environments_app.command("create")
def environments_create(
    ctx: typer.Context,
    name: EnvName,
    folder: FolderOpt,
    description: Annotated[
        str, opt("--description", env="SCALEOUT_DESCRIPTION", help="free text")
    ] = "",
) -> None:
    """Create an environment in a folder (SSIS create_environment)."""
    with session(ctx) as so:
        so.create_environment(folder, name, description)
    out.print(
        Text(
            f"environment {folder}/{name} created: add variables with `scaleout environments "
            f"variables create {name} NAME VALUE --folder {folder}`"
        )
    )


@environments_app.command("rename")
def environments_rename(
    ctx: typer.Context,
    name: EnvName,
    new_name: Annotated[str, typer.Argument(help="its new name")],
    folder: FolderOpt,
) -> None:
    """Rename an environment; the references to it follow (SSIS rename_environment)."""
    with session(ctx) as so:
        so.rename_environment(folder, name, new_name)
    out.print(Text(f"environment {folder}/{name} renamed to {new_name}"))


@environments_app.command("delete")
def environments_delete(ctx: typer.Context, name: EnvName, folder: FolderOpt) -> None:
    """Delete an environment and its variables (references to it then fail until an
    environment of that name exists again, as in SSIS)."""
    with session(ctx) as so:
        so.delete_environment(folder, name)
    out.print(Text(f"environment {folder}/{name} deleted"))


# -- variables --------------------------------------------------------------------------------


@variables_app.command("create")
def variables_create(  # noqa: PLR0917  # typer passes options by keyword
    ctx: typer.Context,
    environment: EnvName,
    name: VarName,
    value: Value,
    folder: FolderOpt,
    data_type: Annotated[
        str,
        opt(
            "--type",
            env="SCALEOUT_TYPE",
            help="string, int, float or bool (SSIS's String, Int32, Double, Boolean too)",
        ),
    ] = "string",
    sensitive: Annotated[
        bool,
        opt("--sensitive", env="SCALEOUT_SENSITIVE", help="stored encrypted, never shown"),
    ] = False,
    description: Annotated[
        str, opt("--description", env="SCALEOUT_DESCRIPTION", help="free text")
    ] = "",
) -> None:
    """Add a variable to an environment (SSIS create_environment_variable)."""
    with session(ctx) as so:
        so.create_environment_variable(
            folder, environment, name, data_type, sensitive, _value(value), description
        )
    kind = "sensitive " if sensitive else ""
    out.print(Text(f"{kind}variable {name} ({data_type}) added to {folder}/{environment}"))


@variables_app.command("set")
def variables_set(
    ctx: typer.Context, environment: EnvName, name: VarName, value: Value, folder: FolderOpt
) -> None:
    """Change a variable's value (SSIS set_environment_variable_value)."""
    with session(ctx) as so:
        so.set_environment_variable_value(folder, environment, name, _value(value))
    out.print(Text(f"variable {name} of {folder}/{environment} set"))


@variables_app.command("delete")
def variables_delete(
    ctx: typer.Context, environment: EnvName, name: VarName, folder: FolderOpt
) -> None:
    """Delete a variable (SSIS delete_environment_variable)."""
    with session(ctx) as so:
        so.delete_environment_variable(folder, environment, name)
    out.print(Text(f"variable {name} deleted from {folder}/{environment}"))


# -- references -------------------------------------------------------------------------------


@references_app.command("create")
def references_create(  # noqa: PLR0917  # typer passes options by keyword
    ctx: typer.Context,
    environment: EnvName,
    folder: FolderOpt,
    project: Annotated[str, opt("--project", env="SCALEOUT_PROJECT", help="project name")],
    environment_folder: Annotated[
        str | None,
        opt(
            "--environment-folder",
            env="SCALEOUT_ENVIRONMENT_FOLDER",
            help="the environment's folder (an absolute reference, 'A'); default: the "
            "project's own (a relative reference, 'R')",
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Let a project use an environment (SSIS create_environment_reference); prints the
    reference id `executions create --reference` takes."""
    kind = "A" if environment_folder else "R"
    with session(ctx) as so:
        reference_id = so.create_environment_reference(
            folder, project, environment, kind, environment_folder
        )
    where = f"{environment_folder or folder}/{environment}"
    hint = f"run with `scaleout executions create ... --reference {reference_id}`"
    emit(
        {"reference_id": reference_id},
        as_json,
        f"reference {reference_id}: {folder}/{project} -> {where}; {hint}",
    )


@references_app.command("delete")
def references_delete(
    ctx: typer.Context, reference_id: Annotated[int, typer.Argument(help="the reference's id")]
) -> None:
    """Delete an environment reference (SSIS delete_environment_reference)."""
    with session(ctx) as so:
        so.delete_environment_reference(reference_id)
    out.print(Text(f"reference {reference_id} deleted"))


@references_app.command("list")
def references_list(
    ctx: typer.Context,
    folder: AnyFolder = None,
    project: Annotated[
        str | None, opt("--project", env="SCALEOUT_PROJECT", help="only this project")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Environment references: their ids, projects, kinds and environments."""
    with session(ctx) as so:
        rows = so.environment_references(folder, project)
    emit(rows, as_json, render_objects.references_table(rows))
