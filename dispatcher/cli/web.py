"""`scaleout web`: the web console (Scale Out Manager in a browser), and its users."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from dispatcher.cli.common import Globals, err, opt, out, say
from dispatcher.cli.services import LogFormatOpt, LogLevel

web_app = typer.Typer(
    help="The web console: workers, executions, logs and charts in a browser.",
    invoke_without_command=True,
)
users_app = typer.Typer(help="The console's users file (names, roles, password hashes).")
web_app.add_typer(users_app, name="users")

UsersFileOpt = Annotated[
    Path | None,
    opt(
        "--users-file",
        env="SCALEOUT_WEB_USERS_FILE",
        help="the users file [default: $XDG_CONFIG_HOME/scaleout/web-users.toml]",
    ),
]


@web_app.callback()
def web(  # noqa: PLR0917  # typer passes options by keyword
    ctx: typer.Context,
    catalog: Annotated[
        str | None,
        opt("--catalog", env="SCALEOUT_CATALOG__URL", help="the catalog's URL (as --catalog-url)"),
    ] = None,
    host: Annotated[
        str, opt("--host", env="SCALEOUT_WEB_HOST", help="address to listen on (loopback)")
    ] = "127.0.0.1",
    port: Annotated[
        int, opt("--port", env="SCALEOUT_WEB_PORT", help="port to listen on", min=0, max=65535)
    ] = 8080,
    users_file: UsersFileOpt = None,
    sign_in: Annotated[
        str,
        opt(
            "--sign-in",
            env="SCALEOUT_WEB_SIGN_IN",
            help="auto: required unless on loopback with no users file; required; off (loopback)",
        ),
    ] = "auto",
    log_level: LogLevel = "INFO",
    log_format: LogFormatOpt = "auto",
) -> None:
    """Serve the console until Ctrl-C. Reads come from the catalog, so it works with the
    broker down; changes go through the same API as the CLI, in the user's name."""
    if ctx.invoked_subcommand is not None:
        return
    import uvicorn  # noqa: PLC0415  # keep `--help` fast

    from dispatcher.api import ScaleOut  # noqa: PLC0415
    from dispatcher.logs import configure_logging  # noqa: PLC0415
    from dispatcher.web import WebSettings, create_app  # noqa: PLC0415
    from dispatcher.web.users import load  # noqa: PLC0415

    values: dict[str, Any] = {"host": host, "port": port, "sign_in": sign_in}
    if users_file is not None:
        values["users_file"] = users_file
    settings = WebSettings(**values)
    _check(settings, len(load(settings.users_file)))
    # web.change (who changed what), web.signed_in, web.sign_in_refused: stable names.
    configure_logging(level=log_level, name="web", log_format=log_format)
    globals_: Globals = ctx.obj
    master = Globals(globals_.config, catalog or globals_.catalog_url, globals_.broker_url)
    with ScaleOut.open(master.master_settings()) as so:
        app = create_app(so, settings)
        mode = "sign-in required" if settings.sign_in_required() else "no sign-in (loopback)"
        say(f"console on http://{_url_host(settings.host)}:{settings.port}/ ({mode}); Ctrl-C stops")
        uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")


def _check(settings: Any, user_count: int) -> None:
    if settings.sign_in == "off" and not settings.loopback:
        msg = f"--sign-in off is for loopback only, not {settings.host}"
        raise typer.BadParameter(msg, param_hint="--sign-in")
    if settings.sign_in_required() and user_count == 0:
        msg = f"sign-in is required but {settings.users_file} has no users"
        raise typer.BadParameter(
            f"{msg}: add one with `scaleout web users add NAME --role admin`",
            param_hint="--users-file",
        )


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _users_path(users_file: Path | None) -> Path:
    from dispatcher.web.settings import default_users_file  # noqa: PLC0415

    return users_file or default_users_file()


def read_password(name: str) -> str:
    """From a hidden prompt on a terminal, else stdin's first line: never from argv."""
    if sys.stdin.isatty():
        password: str = typer.prompt(
            f"password for {name}", hide_input=True, confirmation_prompt=True
        )
        return password
    return sys.stdin.readline().rstrip("\r\n")


@users_app.command("add")
def users_add(
    name: Annotated[str, typer.Argument(help="the user's name")],
    role: Annotated[
        str, opt("--role", env="SCALEOUT_WEB_ROLE", help="viewer, or admin (ssis_admin)")
    ] = "viewer",
    replace: Annotated[
        bool, opt("--replace", env="SCALEOUT_WEB_REPLACE", help="set a new password or role")
    ] = False,
    users_file: UsersFileOpt = None,
) -> None:
    """Add a user; the password comes from a prompt, or from stdin when piped."""
    from dispatcher.web import users  # noqa: PLC0415

    path = _users_path(users_file)
    users.check_name(name)
    users.check_role(role)
    user = users.add(path, name, role, read_password(name), replace=replace)
    out.print(Text(f"user {user.name} ({user.role}) saved in {path}"))


@users_app.command("list")
def users_list(users_file: UsersFileOpt = None) -> None:
    """The users and their roles (never their hashes)."""
    from dispatcher.web import users  # noqa: PLC0415

    path = _users_path(users_file)
    table = Table("user", "role", "SSISDB role", title=str(path))
    for user in sorted(users.load(path).values(), key=lambda u: u.name):
        table.add_row(user.name, user.role, users.SSIS_ROLES[user.role])
    out.print(table)


@users_app.command("remove")
def users_remove(
    name: Annotated[str, typer.Argument(help="the user's name")], users_file: UsersFileOpt = None
) -> None:
    """Remove a user; their session ends at their next request."""
    from dispatcher.web import users  # noqa: PLC0415

    path = _users_path(users_file)
    users.remove(path, name)
    err.print(Text(f"user {name} removed from {path}"))
