"""The ``scaleout`` command: the operator's tool and the composition root.

Settings are loaded here, once (``--config`` TOML, then ``SCALEOUT_*`` variables, then
flags), and passed down; every subcommand calls :mod:`dispatcher.api`, or runs the master
or a worker in the foreground. Errors print one red line and a hint, never a traceback:
exit 2 for a usage error, 1 for anything else.
"""

from __future__ import annotations

import logging
import sys
from importlib import metadata
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from dispatcher.cli import services
from dispatcher.cli.browse import folders_app, packages_app, projects_app
from dispatcher.cli.catalog import catalog_app, deploy
from dispatcher.cli.common import Globals, fail, one_line, opt
from dispatcher.cli.environments import environments_app
from dispatcher.cli.executions import executions_app
from dispatcher.cli.masters import masters_app
from dispatcher.cli.web import web_app
from dispatcher.cli.workers import workers_app
from dispatcher.errors import ScaleoutError
from dispatcher.settings import SettingsError
from schemas.messages import SCHEMA_VERSION

app = typer.Typer(
    name="scaleout",
    help="Scale Out for Python: an SSISDB catalog, a master and workers over RabbitMQ.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)
app.add_typer(catalog_app, name="catalog")
app.add_typer(executions_app, name="executions")
app.add_typer(workers_app, name="workers")
app.add_typer(masters_app, name="masters")
app.add_typer(environments_app, name="environments")
app.add_typer(folders_app, name="folders")
app.add_typer(projects_app, name="projects")
app.add_typer(packages_app, name="packages")
app.add_typer(services.schemas_app, name="schemas")
app.add_typer(web_app, name="web")


app.command("deploy")(deploy)
app.command("master")(services.master)
app.command("worker")(services.worker)
app.command("demo")(services.demo)


def _version(value: bool) -> None:
    if value:
        typer.echo(
            f"scaleout {metadata.version('scaleout')} (wire schema_version {SCHEMA_VERSION})"
        )
        raise typer.Exit


@app.callback()
def _globals(
    ctx: typer.Context,
    _version_flag: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_version,
            is_eager=True,
            help="Print the version and the wire protocol's schema version, then exit.",
        ),
    ] = False,
    config: Annotated[
        Path | None,
        opt(
            "--config",
            env="SCALEOUT_CONFIG",
            help="TOML settings file (sections \\[master] and \\[worker])",
        ),
    ] = None,
    catalog_url: Annotated[
        str | None,
        opt("--catalog-url", env="SCALEOUT_CATALOG__URL", help="SQLAlchemy URL of the catalog"),
    ] = None,
    broker_url: Annotated[
        str | None,
        opt("--broker-url", env="SCALEOUT_BROKER__URL", help="amqps:// (or loopback amqp://) URL"),
    ] = None,
) -> None:
    ctx.obj = Globals(config, catalog_url, broker_url)


def main(argv: list[str] | None = None) -> None:
    """The console script: run the app, turn our errors into one line and an exit code."""
    # Operator commands print their own warnings; library log lines would repeat them.
    # `scaleout master` and `scaleout worker` replace this with JSON logs.
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    try:
        app(args=argv, prog_name="scaleout")
    except ScaleoutError as exc:
        fail(str(exc), exc.hint)
        sys.exit(1)
    except SettingsError as exc:
        fail(str(exc), "see the settings table in the README")
        sys.exit(1)
    except ValidationError as exc:
        fail(one_line(exc), "check the SCALEOUT_* variables and the --config file")
        sys.exit(1)
    except OSError as exc:
        fail(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc))
        sys.exit(1)
    except KeyboardInterrupt:
        fail("interrupted")
        sys.exit(130)
