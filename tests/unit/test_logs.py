"""JSON log lines carry a stable event name, whatever style the call site used."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from dispatcher.logs import ConsoleFormatter, JsonFormatter, configure_logging


def _format(msg: str, *args: object, **extra: object) -> dict[str, object]:
    record = logging.LogRecord("t", logging.INFO, __file__, 1, msg, args, None)
    record.__dict__.update(extra)
    parsed: dict[str, object] = json.loads(JsonFormatter().format(record))
    return parsed


def test_event_only() -> None:
    """A bare event name is the event, with extra fields beside it."""
    line = _format("dispatch.published", attempt=2)

    assert (line["event"], line["attempt"], "message" in line) == ("dispatch.published", 2, False)


def test_event_with_text() -> None:
    """A formatted line keeps its event name stable and its text in `message`."""
    line = _format("worker.started: %s on %s", "w1", "host")

    assert line["event"] == "worker.started"
    assert line["message"] == "worker.started: w1 on host"


def test_free_text_is_marked() -> None:
    """Text with no event name (a library's log) gets the event `log`."""
    line = _format("Connection refused: retrying")

    assert (line["event"], line["message"]) == ("log", "Connection refused: retrying")


def test_the_console_format_is_one_readable_line_with_the_fields() -> None:
    record = logging.LogRecord(
        "t", logging.WARNING, __file__, 1, "heartbeat.failed: %s", ("refused",), None
    )
    record.__dict__.update(failing_for_s=12.5)

    line = ConsoleFormatter().format(record)

    assert re.fullmatch(
        r"\d\d:\d\d:\d\d\.\d{3} WARNING heartbeat\.failed: refused  failing_for_s=12\.5", line
    ), line


def test_the_log_file_is_json_and_survives_rotation(tmp_path: Path) -> None:
    """logrotate moves the file away; the next line goes to a new file of the same name."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        configure_logging(folder=tmp_path, name="master", log_format="console")
        logging.getLogger("t").info("service.started")
        (tmp_path / "master.log").rename(tmp_path / "master.log.1")
        logging.getLogger("t").info("service.stopping")
        for handler in root.handlers:
            handler.flush()
    finally:
        for handler in root.handlers:
            if handler not in handlers:
                handler.close()
        root.handlers[:] = handlers
        root.setLevel(level)

    rotated = [json.loads(x) for x in (tmp_path / "master.log.1").read_text().splitlines()]
    current = [json.loads(x) for x in (tmp_path / "master.log").read_text().splitlines()]
    assert [e["event"] for e in rotated] == ["service.started"]
    assert [e["event"] for e in current] == ["service.stopping"]
