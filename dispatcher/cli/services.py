"""The long-running commands (`scaleout master`, `worker`, `demo`) and `schemas export`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from dispatcher.cli.common import (
    Globals,
    err,
    opt,
    out,
)
from dispatcher.logs import LogFormat
from dispatcher.settings import MasterSettings

schemas_app = typer.Typer(
    help="The wire protocol's JSON Schemas and broker topology.", no_args_is_help=True
)

# -- services ------------------------------------------------------------------------------

LogLevel = Annotated[
    str, opt("--log-level", env="SCALEOUT_LOG_LEVEL", help="DEBUG, INFO, WARNING or ERROR")
]
LogFormatOpt = Annotated[
    LogFormat,
    opt(
        "--log-format",
        env="SCALEOUT_LOG_FORMAT",
        help="stderr as json lines, or console lines for a person; auto: console on a terminal",
    ),
]


def master(
    ctx: typer.Context, log_level: LogLevel = "INFO", log_format: LogFormatOpt = "auto"
) -> None:
    """Run the Scale Out Master in the foreground until SIGTERM or Ctrl-C."""
    from dispatcher.catalog import Catalog  # noqa: PLC0415  # keep `--help` fast
    from dispatcher.logs import configure_logging  # noqa: PLC0415
    from dispatcher.service import MasterService  # noqa: PLC0415

    settings: MasterSettings = ctx.obj.master_settings()
    configure_logging(
        level=log_level, folder=settings.log_folder, name="master", log_format=log_format
    )
    catalog = Catalog.for_master(settings)
    try:
        code = MasterService(settings, catalog).run()
    finally:
        catalog.close()
    raise typer.Exit(code)


def worker(
    ctx: typer.Context,
    worker_id: Annotated[
        str | None, opt("--id", env="SCALEOUT_WORKER_ID", help="this worker's id (AgentId)")
    ] = None,
    log_level: LogLevel = "INFO",
    log_format: LogFormatOpt = "auto",
) -> None:
    """Run a Scale Out Worker in the foreground until SIGTERM or Ctrl-C."""
    from consumers.worker.service import run_worker  # noqa: PLC0415
    from consumers.worker.settings import WorkerSettings  # noqa: PLC0415
    from dispatcher.logs import configure_logging  # noqa: PLC0415

    globals_: Globals = ctx.obj
    overrides: dict[str, Any] = {"worker_id": worker_id}
    if globals_.broker_url:
        overrides["broker"] = {"url": globals_.broker_url}
    settings = WorkerSettings.load(globals_.config, **overrides)
    configure_logging(level=log_level, name=f"worker-{settings.worker_id}", log_format=log_format)
    raise typer.Exit(run_worker(settings))


@schemas_app.command("export")
def schemas_export(
    folder: Annotated[
        Path,
        typer.Argument(
            help="where to write one .json file per message, asyncapi.json and index.json"
        ),
    ],
) -> None:
    """Write the wire protocol's JSON Schemas and its broker topology (AsyncAPI 3.0).

    For workers written in other languages; prints every path it writes."""
    from schemas.export import export_json_schemas  # noqa: PLC0415

    for path in export_json_schemas(folder):
        # One path a line, never wrapped: scripts read this.
        out.print(Text(str(path)), soft_wrap=True)


def demo(
    ctx: typer.Context,
    root: Annotated[
        Path, opt("--root", env="SCALEOUT_DEMO_ROOT", help="runs go to ROOT/<timestamp>/")
    ] = Path("demo-run"),
    certs: Annotated[
        Path,
        opt("--certs", env="SCALEOUT_DEMO_CERTS", help="TLS node certificates (amqps:// only)"),
    ] = Path("/var/tmp/scaleout-tls/certs"),  # noqa: S108  # deploy/local/tls-node.sh's home
    timeout: Annotated[
        float, opt("--timeout", env="SCALEOUT_DEMO_TIMEOUT", help="seconds for the 20 executions")
    ] = 45.0,
) -> None:
    """A one-box cluster: a master and two workers run 20 executions of the example."""
    from dispatcher.cli.demo import DemoOptions, run_demo  # noqa: PLC0415

    broker_url: str | None = ctx.obj.broker_url
    raise typer.Exit(run_demo(DemoOptions(root, broker_url, certs, timeout), out, err))
