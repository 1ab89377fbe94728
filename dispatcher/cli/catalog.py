"""`scaleout catalog init|upgrade` and `scaleout deploy`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from dispatcher.cli.common import (
    FolderOpt,
    JsonFlag,
    emit,
    err,
    opt,
    out,
    session,
)

catalog_app = typer.Typer(help="Create or upgrade the SSISDB catalog.", no_args_is_help=True)


# -- catalog -------------------------------------------------------------------------------


def _init_catalog(ctx: typer.Context) -> None:
    with session(ctx) as so, err.status("Bringing the catalog's schema up to date..."):
        revision = so.init_catalog()
    url = ctx.obj.master_settings().catalog.redacted_url
    out.print(Text(f"catalog {url} is at revision {revision}"))


@catalog_app.command("init")
def catalog_init(ctx: typer.Context) -> None:
    """Create the catalog's tables (Alembic upgrade to head; safe to repeat)."""
    _init_catalog(ctx)


@catalog_app.command("upgrade")
def catalog_upgrade(ctx: typer.Context) -> None:
    """Upgrade the catalog's schema to this version's (Alembic)."""
    _init_catalog(ctx)


# -- deploy --------------------------------------------------------------------------------


def deploy(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="a project folder (with manifest.json) or a .zip")],
    folder: FolderOpt,
    project: Annotated[
        str | None,
        opt("--project", env="SCALEOUT_PROJECT", help="project name (default: the manifest's)"),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Deploy a project (SSIS deploy_project): a new version unless the bytes are unchanged."""
    with session(ctx) as so, err.status(f"Deploying {path}..."):
        result = so.deploy(path, folder, project)
    what = "deployed" if result.created else "unchanged"
    emit(
        result,
        as_json,
        f"{result.folder_name}/{result.project_name} {what}: version {result.project_lsn}, "
        f"sha256 {result.content_hash[:12]}",
    )
