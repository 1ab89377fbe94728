"""``python -m consumers.worker [settings.toml]``: the worker without the CLI (tests,
containers). Settings come from the file, then ``SCALEOUT_*`` environment variables."""

from __future__ import annotations

import sys
from pathlib import Path

from dispatcher.logs import configure_logging

from .service import run_worker
from .settings import WorkerSettings


def main(argv: list[str]) -> int:
    configure_logging(name="worker")
    return run_worker(WorkerSettings.load(Path(argv[0]) if argv else None))


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
