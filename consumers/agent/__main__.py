"""``python -m consumers.agent [settings.toml]``: the worker without the CLI (tests,
containers). Settings come from the file, then ``SCALEOUT_*`` environment variables."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from .agent import run_worker
from .settings import WorkerSettings


def main(argv: list[str]) -> int:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    # The adapter logs each reconnect as broker.reconnecting; pika's own errors repeat it.
    logging.getLogger("pika").setLevel(logging.CRITICAL)
    return run_worker(WorkerSettings.load(Path(argv[0]) if argv else None))


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
