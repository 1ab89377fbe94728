"""JSON log lines carry a stable event name, whatever style the call site used."""

from __future__ import annotations

import json
import logging

from dispatcher.logs import JsonFormatter


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
