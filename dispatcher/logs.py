"""Structured logs: one JSON object per line, the message is a stable event name.

Call sites log ``logger.info("dispatch.published", extra={"task_id": ..., "attempt": 2})``
or, for a human-readable line, ``logger.info("worker.started: %s on %s", ...)``; either way
the ``event`` field is the stable name before the first colon, ``message`` the whole line,
and every extra field rides along. Operators grep or parse event names, so an event's name
never changes once shipped.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import re
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

_EVENT_NAME = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)+$")
_STANDARD = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__.keys() | {"message", "asctime"}
)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        event = str(record.msg).split(":", 1)[0].strip()
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "event": event if _EVENT_NAME.match(event) else "log",
            "logger": record.name,
        }
        if message != entry["event"]:
            entry["message"] = message
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class ConsoleFormatter(logging.Formatter):
    """One readable line for a person at a terminal: time, level, event, message, fields.

    The same records as :class:`JsonFormatter`, so nothing is lost by choosing it; only
    the layout differs."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        clock = datetime.fromtimestamp(record.created, UTC).strftime("%H:%M:%S.%f")[:-3]
        fields = " ".join(
            f"{key}={value}"
            for key, value in record.__dict__.items()
            if key not in _STANDARD and not key.startswith("_")
        )
        line = f"{clock} {record.levelname:<7} {message}" + (f"  {fields}" if fields else "")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


LogFormat = Literal["auto", "json", "console"]


def configure_logging(
    *,
    level: str = "INFO",
    folder: Path | None = None,
    name: str,
    log_format: LogFormat = "auto",
) -> None:
    """Log lines to stderr and, when ``folder`` is given, JSON lines to ``folder/<name>.log``.

    stderr gets JSON, or with ``console`` (``auto``: when stderr is a terminal) readable
    lines. The file is always JSON, for machines, and reopened when logrotate moves it
    (WatchedFileHandler), so rotation needs no signal and loses no line."""
    console = log_format == "console" or (log_format == "auto" and sys.stderr.isatty())
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(ConsoleFormatter() if console else JsonFormatter())
    handlers: list[logging.Handler] = [stream]
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        file = logging.handlers.WatchedFileHandler(folder / f"{name}.log", encoding="utf-8")
        file.setFormatter(JsonFormatter())
        handlers.append(file)
    root = logging.getLogger()
    root.handlers[:] = handlers
    root.setLevel(level.upper())
    # pika logs every reconnect attempt at WARNING with tracebacks; ours say it once, clearly.
    logging.getLogger("pika").setLevel(logging.CRITICAL)
