"""What every ``scaleout`` subcommand shares: consoles, options with their environment
variables, the global settings, the API session and the output helpers."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console, RenderableType
from rich.text import Text

from dispatcher.api import ScaleOut
from dispatcher.cli import render
from dispatcher.settings import MasterSettings

out = Console()
err = Console(stderr=True, soft_wrap=True)  # an error stays one line in a log


def opt(*names: str, env: str, help: str, **kwargs: Any) -> Any:
    """A typer option whose environment variable ``--help`` shows."""
    return typer.Option(*names, envvar=env, show_envvar=True, help=help, **kwargs)


JsonFlag = Annotated[bool, opt("--json", env="SCALEOUT_JSON", help="print JSON for scripts")]
TimeoutOpt = Annotated[
    float, opt("--timeout", env="SCALEOUT_WAIT_TIMEOUT", help="seconds --wait waits at most")
]
FolderOpt = Annotated[str, opt("--folder", env="SCALEOUT_FOLDER", help="catalog folder")]
RetryOpt = Annotated[
    int, opt("--retry-count", env="SCALEOUT_RETRY_COUNT", help="retries after a failure", min=0)
]
WaitOpt = Annotated[
    bool, opt("--wait", env="SCALEOUT_WAIT", help="start, wait; exit 1 unless it succeeds")
]
QuietOpt = Annotated[
    bool,
    opt(
        "--quiet",
        "-q",
        env="SCALEOUT_QUIET",
        help="--wait prints no status changes, progress or log lines (still the id and why)",
    ),
]
ExecutionId = Annotated[int, typer.Argument(help="the execution's id")]
WorkerId = Annotated[str, typer.Argument(help="the worker agent's id")]


@dataclass(frozen=True, slots=True)
class Globals:
    config: Path | None
    catalog_url: str | None
    broker_url: str | None

    def master_settings(self) -> MasterSettings:
        overrides: dict[str, Any] = {}
        if self.catalog_url:
            overrides["catalog"] = {"url": self.catalog_url}
        if self.broker_url:
            overrides["broker"] = {"url": self.broker_url}
        return MasterSettings.load(self.config, **overrides)


@contextlib.contextmanager
def session(ctx: typer.Context) -> Iterator[ScaleOut]:
    globals_: Globals = ctx.obj
    with ScaleOut.open(globals_.master_settings()) as so:
        yield so


def say(message: str, style: str = "") -> None:
    err.print(Text(message, style=style))


def emit(value: object, as_json: bool, human: RenderableType | str) -> None:
    """``value`` as JSON for scripts, else ``human`` for people."""
    if as_json:
        render.print_json(out, value)
    else:
        out.print(Text(human) if isinstance(human, str) else human)


def fail(message: str, hint: str = "") -> None:
    line = Text("error: ", style="bold red")
    line.append(message, style="red")
    err.print(line)
    if hint:
        err.print(Text(f"hint: {hint}", style="dim"))


def one_line(exc: ValidationError) -> str:
    parts = [f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in exc.errors()]
    return f"invalid settings: {'; '.join(parts)}"
