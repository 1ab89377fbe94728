"""The on-disk outbox keeps unsent reports in order, within its bound, across restarts;
the reporter sends through it while the broker is away."""

from __future__ import annotations

import errno
import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import BaseModel

from consumers.worker.outbox import OUTBOX_FILE, Outbox, Outgoing, Reporter, ReportLost
from dispatcher.errors import BrokerError, BrokerUnavailable
from dispatcher.metrics import WORKER
from schemas.messages import LogEntry, TaskLog
from tests.fixtures.polling import wait_for

REPO = Path(__file__).resolve().parents[3]

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


# -- a report cache that cannot be written (issue 14) ------------------------------------


class FullDisk(Outbox):
    """Our Outbox seam with a disk that is full while ``full`` is set: every append fails
    as the OS would fail it (ENOSPC). The integration test fills a real tmpfs."""

    def __init__(self, folder: Path) -> None:
        super().__init__(folder, max_messages=1000)
        self.full = threading.Event()
        self.failures = 0

    def append(self, items: Sequence[Outgoing]) -> None:
        if self.full.is_set() and items:
            self.failures += 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        super().append(items)


@contextmanager
def running(reporter: Reporter) -> Iterator[threading.Event]:
    stop = threading.Event()
    thread = threading.Thread(target=reporter.run, args=(stop,))
    thread.start()
    try:
        yield stop
    finally:
        stop.set()
        thread.join(timeout=30)
        assert not thread.is_alive()


def counted(name: str) -> float:
    return WORKER.get_sample_value(name) or 0.0


def test_reports_the_disk_cannot_take_are_held_in_order_and_cached_once_it_can(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Broker down and disk full: the reports are neither confirmed nor reported cached,
    the reporter says why no task should be taken, logs outbox.write_failed once and
    counts each failed write; later submissions wait behind them. Once the disk has room
    they are cached, in order, and the refusal ends (outbox.write_recovered)."""
    publisher = FlakyPublisher()
    publisher.down.set()
    outbox = FullDisk(tmp_path)
    outbox.full.set()
    reporter = Reporter(lambda: publisher, outbox)
    failures_before = counted("scaleout_worker_outbox_write_failures_total")
    with caplog.at_level(logging.WARNING), running(reporter):
        first = [reporter.submit(log(i)) for i in range(3)]
        wait_for(lambda: outbox.failures >= 3, 10, "three failed writes (one a second)")
        later = reporter.submit(log(3))
        assert not any(f.done() for f in [*first, later])
        assert "report cache not writable (No space left on device)" in reporter.refusal()
        assert len(outbox) == 0
        outbox.full.clear()
        assert [f.result(timeout=10) for f in [*first, later]] == [False] * 4
        assert reporter.refusal() == ""
    assert seqs(drain(outbox)) == [0, 1, 2, 3]
    messages = [r.getMessage() for r in caplog.records]
    assert sum(m.startswith("outbox.write_failed") for m in messages) == 1
    assert sum(m.startswith("outbox.write_recovered") for m in messages) == 1
    assert counted("scaleout_worker_outbox_write_failures_total") - failures_before >= 3


def test_held_reports_go_to_the_broker_when_it_is_back_before_the_disk(tmp_path: Path) -> None:
    """The disk stays full; the broker comes back: the held reports are published, in
    order, ahead of later ones, and confirmed."""
    publisher = FlakyPublisher()
    publisher.down.set()
    outbox = FullDisk(tmp_path)
    outbox.full.set()
    reporter = Reporter(lambda: publisher, outbox)
    with running(reporter):
        held = [reporter.submit(log(i)) for i in range(3)]
        wait_for(lambda: outbox.failures >= 1, 10, "a failed write")
        later = reporter.submit(log(3))
        publisher.down.clear()
        assert [f.result(timeout=10) for f in [*held, later]] == [True] * 4
        assert reporter.refusal() == ""
    assert [m.entries[0].seq for m in publisher.sent if isinstance(m, TaskLog)] == [0, 1, 2, 3]
    assert len(outbox) == 0


def test_a_reporter_stopped_with_reports_held_says_they_are_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Stopping while neither the broker nor the disk takes them: each held report's
    future fails with ReportLost, outbox.lost is logged with the count, and counted."""
    publisher = FlakyPublisher()
    publisher.down.set()
    outbox = FullDisk(tmp_path)
    outbox.full.set()
    reporter = Reporter(lambda: publisher, outbox)
    lost_before = counted("scaleout_worker_reports_lost_total")
    with caplog.at_level(logging.WARNING), running(reporter):
        held = [reporter.submit(log(i)) for i in range(2)]
        wait_for(lambda: outbox.failures >= 1, 10, "a failed write")
    for future in held:
        with pytest.raises(ReportLost):
            future.result(timeout=10)
    assert counted("scaleout_worker_reports_lost_total") - lost_before == 2
    assert any(r.getMessage().startswith("outbox.lost: 2 reports") for r in caplog.records)


def test_an_append_cut_short_by_the_os_leaves_no_torn_line(tmp_path: Path) -> None:
    """A real short write: with RLIMIT_FSIZE below what the append needs, the OS refuses
    the rest (EFBIG); the append raises, the file is cut back to the lines it had, and a
    reopened outbox finds exactly those."""
    Outbox(tmp_path, max_messages=100).append([log(0)])
    size = (tmp_path / OUTBOX_FILE).stat().st_size
    script = (
        "import resource, sys\n"
        "from pathlib import Path\n"
        "from tests.unit.worker.test_outbox import log\n"
        "from consumers.worker.outbox import Outbox\n"
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({size + 100}, {size + 100}))\n"
        "outbox = Outbox(Path(sys.argv[1]), max_messages=100)\n"
        "try:\n"
        "    outbox.append([log(i) for i in range(1, 50)])\n"
        "except OSError as exc:\n"
        "    print(exc.errno)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert done.stdout.strip() == str(errno.EFBIG), done.stderr
    assert (tmp_path / OUTBOX_FILE).stat().st_size == size
    assert seqs(drain(Outbox(tmp_path, max_messages=100))) == [0]
