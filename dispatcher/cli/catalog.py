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
    say,
    session,
)
from dispatcher.keys import default_key_file, new_key_text, write_key_file

catalog_app = typer.Typer(
    help="Create or upgrade the SSISDB catalog; rotate the key of its sensitive values.",
    no_args_is_help=True,
)


# -- catalog -------------------------------------------------------------------------------


def _init_catalog(ctx: typer.Context) -> None:
    with session(ctx) as so, err.status("Bringing the catalog's schema up to date..."):
        revision = so.init_catalog()
    settings = ctx.obj.master_settings().catalog
    out.print(Text(f"catalog {settings.redacted_url} is at revision {revision}"))
    if settings.key is None:
        _ensure_key_file(settings.key_file or default_key_file())


def _ensure_key_file(path: Path) -> None:
    """The catalog key sensitive values need, written once (never into the catalog), so
    a first run needs no key setup; production points key_file at a managed file."""
    try:
        write_key_file(path, [new_key_text()], exclusive=True)
    except FileExistsError:
        return
    say(
        f"wrote a new catalog key to {path} (it encrypts sensitive values): back it up, "
        "and give the master the same file (SCALEOUT_CATALOG__KEY_FILE)",
        "yellow",
    )


@catalog_app.command("init")
def catalog_init(ctx: typer.Context) -> None:
    """Create the catalog's tables (Alembic upgrade to head; safe to repeat)."""
    _init_catalog(ctx)


@catalog_app.command("rotate-key")
def catalog_rotate_key(
    ctx: typer.Context,
    key_file: Annotated[
        Path | None,
        opt(
            "--key-file",
            env="SCALEOUT_NEW_KEY_FILE",
            help="where the new key goes (default: the configured key file)",
        ),
    ] = None,
) -> None:
    """Re-encrypt every sensitive value with a new catalog key, in one transaction; the
    key file then holds the new key only (a running master rereads it)."""
    settings = ctx.obj.master_settings().catalog
    target = key_file or settings.key_file
    if target is None and settings.key is None:
        target = default_key_file()
    if target is None:
        msg = "the key comes from SCALEOUT_CATALOG__KEY: say where the new key goes"
        raise typer.BadParameter(msg, param_hint="--key-file")
    with session(ctx) as so, err.status("Re-encrypting the sensitive values..."):
        count = so.rotate_key(target)
    done = f"catalog key rotated: {count} sensitive values re-encrypted"
    out.print(Text(f"{done}; the new key is in {target}"))
    if settings.key is not None:
        say(
            "the old key came from SCALEOUT_CATALOG__KEY: give every master and CLI the new "
            f"file instead (SCALEOUT_CATALOG__KEY_FILE={target}, and unset the variable)",
            "yellow",
        )


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
