"""The on-disk outbox keeps unsent reports in order, within its bound, across restarts;
the reporter sends through it while the broker is away."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import BaseModel

from consumers.worker.outbox import OUTBOX_FILE, Outbox, Outgoing, Reporter
from dispatcher.errors import BrokerError, BrokerUnavailable
from schemas.messages import LogEntry, TaskLog

TASK = uuid.uuid4()


def log(seq: int) -> Outgoing:
    message = TaskLog(
        task_id=TASK,
        attempt=1,
        execution_id=1,
        worker_id="w1",
        entries=(LogEntry(seq=seq, time=datetime.now(UTC), message=f"line {seq}"),),
    )
    return Outgoing("scaleout.status", "status", message)


def seqs(items: Sequence[Outgoing]) -> list[int]:
    out = []
    for item in items:
        assert isinstance(item.message, TaskLog)
        out.append(item.message.entries[0].seq)
    return out


def drain(outbox: Outbox) -> list[Outgoing]:
    got: list[Outgoing] = []

    def send(chunk: list[Outgoing]) -> int:
        got.extend(chunk)
        return len(chunk)

    outbox.resend(send)
    return got


def test_the_bound_drops_the_oldest_and_counts_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Past max_messages, the oldest reports go first and the drop is counted and logged."""
    outbox = Outbox(tmp_path, max_messages=5)
    outbox.append([log(i) for i in range(4)])
    outbox.append([log(i) for i in range(4, 8)])
    assert len(outbox) == 5
    assert outbox.dropped == 3
    assert "outbox.dropped" in caplog.text
    assert seqs(drain(outbox)) == [3, 4, 5, 6, 7]
    assert len(outbox) == 0


def test_a_partial_resend_keeps_the_unconfirmed_rest_in_order(tmp_path: Path) -> None:
    """Only the confirmed head leaves the file; the rest stays, in order, for the next try."""
    outbox = Outbox(tmp_path, max_messages=1000)
    outbox.append([log(i) for i in range(120)])
    sent = outbox.resend(lambda chunk: min(len(chunk), 7))
    assert sent == 7
    assert seqs(drain(outbox))[:3] == [7, 8, 9]


def test_a_reopened_outbox_still_has_its_reports_and_skips_a_torn_line(tmp_path: Path) -> None:
    """A restarted worker finds the cached reports; a line cut by a crash is skipped."""
    Outbox(tmp_path, max_messages=10).append([log(0), log(1)])
    with (tmp_path / OUTBOX_FILE).open("a") as f:
        f.write('{"exchange": "scaleout.status", "body": "{\\"type\\": \n')
    reopened = Outbox(tmp_path, max_messages=10)
    assert len(reopened) == 3
    items = drain(reopened)
    assert seqs([i for i in items if i.exchange]) == [0, 1]
    assert len(reopened) == 0


class FlakyPublisher:
    """Our PublisherLike seam: fails every publish while ``down`` is set."""

    def __init__(self) -> None:
        self.down = threading.Event()
        self.sent: list[BaseModel] = []

    def publish_batch(
        self, items: Sequence[tuple[str, str, BaseModel]]
    ) -> list[BrokerError | None]:
        if self.down.is_set():
            return [BrokerUnavailable("down")] * len(items)
        self.sent.extend(message for _, _, message in items)
        return [None] * len(items)

    def close(self) -> None:
        pass


def test_the_reporter_caches_while_the_broker_is_down_and_resends_in_order(
    tmp_path: Path,
) -> None:
    """Durable reports go to disk while publishing fails and reach the broker first, in
    order, once it is back; a non-durable one fails its future instead."""
    publisher = FlakyPublisher()
    outbox = Outbox(tmp_path, max_messages=100)
    reporter = Reporter(lambda: publisher, outbox)
    stop = threading.Event()
    thread = threading.Thread(target=reporter.run, args=(stop,))
    thread.start()
    try:
        publisher.down.set()
        cached = [reporter.submit(log(i)) for i in range(3)]
        assert [f.result(timeout=10) for f in cached] == [False, False, False]
        started = reporter.submit(log(99), durable=False)
        with pytest.raises(BrokerError):
            started.result(timeout=10)
        assert len(outbox) == 3
        publisher.down.clear()
        reporter.submit(log(3)).result(timeout=10)  # sent, or cached behind the others
        deadline = time.monotonic() + 10
        while len(outbox) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(timeout=10)
    assert [m.entries[0].seq for m in publisher.sent if isinstance(m, TaskLog)] == [0, 1, 2, 3]
    assert len(outbox) == 0
