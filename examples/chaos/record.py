"""One JSON line per event, appended to ``<RecordsDir>/records.jsonl`` with O_APPEND and
fsync, so records from every worker's packages can be counted after a chaos run.

The package learns who it is from the worker's layout and environment, not from the
catalog: its working folder is ``TasksRootFolder/<task_id>/<attempt>``; the worker's id is
``$CHAOS_WORKER_ID`` (set in the worker's environment, which packages inherit); the
execution id is the ``Execution`` parameter (``$SSIS_PARAM_EXECUTION``).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

RECORDS_FILE = "records.jsonl"


def records_dir() -> Path:
    folder = os.environ.get("SSIS_PARAM_RECORDSDIR") or os.environ.get("CHAOS_RECORDS_DIR")
    if not folder:
        msg = "no records folder: set the RecordsDir parameter or $CHAOS_RECORDS_DIR"
        raise SystemExit(msg)
    return Path(folder)


def identity() -> dict[str, object]:
    cwd = Path.cwd()
    return {
        "task_id": cwd.parent.name,
        "attempt": int(cwd.name) if cwd.name.isdigit() else 0,
        "worker": os.environ.get("CHAOS_WORKER_ID", ""),
        "execution": int(os.environ.get("SSIS_PARAM_EXECUTION") or 0),
        "pid": os.getpid(),
    }


def write(kind: str) -> None:
    """Append one record of ``kind`` (begin, effect, fail, poison) and fsync it."""
    line = json.dumps({"kind": kind, "t": time.time(), **identity()}) + "\n"
    path = records_dir() / RECORDS_FILE
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())  # one write of < PIPE_BUF bytes: never interleaved
        os.fsync(fd)
    finally:
        os.close(fd)
