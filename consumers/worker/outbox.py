"""Reports on their way to the master: one publishing thread, and a disk cache for the
time the broker is away (SSIS's ExecutionLogCacheFolder).

The :class:`Reporter` thread owns the worker's report connection and publishes status,
logs and fetches in the order they were submitted. A report that cannot be confirmed
(logs, finished) is appended to the :class:`Outbox`, one JSON line per message, and
everything after it follows it there, so order holds; the outbox is resent, oldest first,
when the broker answers again and when a restarted worker starts. Duplicates are harmless
(the master dedupes by attempt, seq and message id); loss is not, so only the bounds
(count, size, age: ``execution_log_max_cached``, ``ExecutionLogCacheMaxSize``,
``ExecutionLogCacheRetention``) drop anything, oldest first, with a counted warning.

A cache that cannot be written (disk full, quota, read-only) loses nothing either: the
append is undone (the file truncated back), the reports are *held* in memory in order, the
reporter takes no new submission meanwhile (so packages block on their output, as when
the queue is full), and it tries again every second, to the broker first when it answers,
else to the disk. ``outbox.write_failed`` is logged once when it starts,
``outbox.write_recovered`` when it ends, each failed write is counted, and the worker
takes no new task meanwhile (its heartbeat says ``accepting`` false and why). Only a
worker stopped while reports are held loses them: ``outbox.lost``, counted.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel

from dispatcher import metrics
from dispatcher.errors import BrokerError, BrokerUnavailable
from schemas.messages import DecodeError, decode

from .retention import LOG_CACHE

logger = logging.getLogger(__name__)

OUTBOX_FILE = "outbox.jsonl"
_RESEND_CHUNK = 50
_RECONNECT_EVERY_S = 2.0
_HELD_RETRY_S = 1.0


class ReportLost(RuntimeError):
    """A durable report neither confirmed nor cached when the reporter stopped."""


@dataclass(frozen=True, slots=True)
class Outgoing:
    exchange: str
    routing_key: str
    message: BaseModel


class PublisherLike(Protocol):
    """What the reporter needs of :class:`dispatcher.broker.Publisher`."""

    def publish_batch(
        self, items: Sequence[tuple[str, str, BaseModel]]
    ) -> list[BrokerError | None]: ...
    def close(self) -> None: ...


class Outbox:
    """Unsent reports in ``<folder>/outbox.jsonl``, oldest first, within three bounds: at
    most ``max_messages``, at most ``max_bytes`` of file, none cached longer than
    ``retention_s``. Past a bound the oldest are dropped, counted and logged alike.

    The count and size bounds hold at every append; the age bound at every :meth:`prune`
    (the retention sweep). Dropping takes the lock :meth:`resend` holds, so a report is
    never dropped while it is being sent."""

    def __init__(
        self,
        folder: Path,
        max_messages: int,
        *,
        max_bytes: int | None = None,
        retention_s: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self._path = folder / OUTBOX_FILE
        self._max = max_messages
        self._max_bytes = max_bytes
        self._retention_s = retention_s
        self._clock = clock
        self._lock = threading.Lock()
        self.dropped = 0
        self._count = sum(1 for _ in self._raw_lines())
        self._bytes = self._size()
        metrics.WORKER_CACHED_REPORTS.set_function(lambda: self._count)

    def __len__(self) -> int:
        return self._count

    @property
    def path(self) -> Path:
        return self._path

    def append(self, items: Sequence[Outgoing]) -> None:
        if not items:
            return
        cached_at = round(self._clock(), 3)
        lines = [
            json.dumps(
                {
                    "exchange": item.exchange,
                    "routing_key": item.routing_key,
                    "body": item.message.model_dump_json(),
                    "cached_at": cached_at,
                }
            )
            + "\n"
            for item in items
        ]
        with self._lock:
            before = self._size()
            try:
                with self._path.open("a", encoding="utf-8") as out:
                    out.writelines(lines)
                    out.flush()
                    os.fsync(out.fileno())
                    self._bytes = os.fstat(out.fileno()).st_size
            except OSError:
                self._undo_append(before)
                raise
            self._count += len(items)
        try:
            self._drop(now=None)
        except OSError as exc:  # appended all the same; the bound holds at the next try
            logger.warning("outbox.prune_failed: %s", exc)

    def _undo_append(self, size: int) -> None:
        """Cut what a failed append wrote, so no torn line stays and the space is free."""
        try:
            os.truncate(self._path, size)
        except OSError as exc:
            logger.warning("outbox.truncate_failed: %s", exc)
        self._bytes = self._size()

    def prune(self) -> int:
        """Drop the reports past any bound, the age bound included; how many went."""
        return self._drop(now=self._clock())

    def _drop(self, *, now: float | None) -> int:
        """Drop the oldest reports past the bounds (past the age bound too when ``now`` is
        given); how many went."""
        with self._lock:
            skip, reasons = self._excess(now)
            if not skip:
                return 0
            before = self._bytes
            self._rewrite(skip=skip)
            freed = max(0, before - self._bytes)
            self.dropped += skip
        metrics.WORKER_DISK_REMOVED.labels(what=LOG_CACHE).inc(skip)
        metrics.WORKER_DISK_REMOVED_BYTES.labels(what=LOG_CACHE).inc(freed)
        why = ", ".join(sorted(reasons))
        logger.warning(
            "outbox.dropped: %d oldest unsent reports dropped (%d in all); past the cache's "
            "bound (%s)",
            skip,
            self.dropped,
            why,
            extra={"count": skip, "total": self.dropped, "reason": why, "bytes": freed},
        )
        return skip

    def _excess(self, now: float | None) -> tuple[int, set[str]]:
        """How many of the oldest lines are past a bound, and which bounds."""
        by_count = max(0, self._count - self._max)
        by_bytes = self._bytes - self._max_bytes if self._max_bytes is not None else 0
        cutoff = None
        if now is not None and self._retention_s is not None:
            cutoff = now - self._retention_s
        if by_count <= 0 and by_bytes <= 0 and cutoff is None:
            return 0, set()
        skip, freed, reasons = 0, 0, set()
        for index, line in enumerate(self._raw_lines()):
            if index < by_count:
                reasons.add("count")
            elif freed < by_bytes:
                reasons.add("size")
            elif cutoff is not None and _cached_at(line) <= cutoff:
                reasons.add("age")
            else:
                break  # lines are in append order: the rest are younger
            skip = index + 1
            freed += len(line.encode("utf-8", errors="replace"))
        return skip, reasons

    def resend(self, send: Callable[[list[Outgoing]], int]) -> int:
        """Hand the cached reports to ``send`` in chunks, oldest first; ``send`` returns how
        many of a chunk were confirmed. Confirmed ones leave the file; returns that count."""
        with self._lock:
            sent = 0
            chunk: list[Outgoing] = []
            for item in self._items():
                chunk.append(item)
                if len(chunk) < _RESEND_CHUNK:
                    continue
                confirmed = send(chunk)
                sent += confirmed
                chunk = []
                if confirmed < _RESEND_CHUNK:
                    break
            else:
                if chunk:
                    sent += send(chunk)
            if sent:
                self._rewrite(skip=sent)
            return sent

    def _items(self) -> Iterator[Outgoing]:
        for line in self._raw_lines():
            try:
                record = json.loads(line)
                message = decode(record["body"].encode())
                yield Outgoing(record["exchange"], record["routing_key"], message)
            except (ValueError, KeyError, TypeError, DecodeError) as exc:
                # A line cut by a crash mid-write; the rest of the file is still good.
                logger.warning("outbox.corrupt_line: skipped (%s)", type(exc).__name__)
                yield Outgoing("", "", _Skip())

    def _raw_lines(self) -> Iterator[str]:
        if not self._path.exists():
            return
        with self._path.open(encoding="utf-8", errors="replace") as lines:
            yield from (line for line in lines if line.strip())

    def _rewrite(self, *, skip: int) -> None:
        """Keep all but the first ``skip`` lines (atomic: temp file, then rename)."""
        tmp = self._path.with_suffix(".tmp")
        kept = 0
        try:
            with tmp.open("w", encoding="utf-8") as out:
                for index, line in enumerate(self._raw_lines()):
                    if index >= skip:
                        out.write(line if line.endswith("\n") else line + "\n")
                        kept += 1
                out.flush()
                os.fsync(out.fileno())
        except OSError:
            tmp.unlink(missing_ok=True)
            if skip < self._count:
                raise
            # Nothing is kept: emptying the file needs no space, where a copy does.
            os.truncate(self._path, 0)
            kept = 0
        else:
            tmp.replace(self._path)
        self._count = kept
        self._bytes = self._size()

    def _size(self) -> int:
        try:
            return self._path.stat().st_size
        except FileNotFoundError:
            return 0


def _cached_at(line: str) -> float:
    """When a line was cached (Unix time). A line written before lines were stamped is
    taken as new (kept, until sent or another bound drops it); an unreadable one as old,
    since it would never be sent anyway."""
    try:
        record = json.loads(line)
    except ValueError:
        return float("-inf")
    stamp = record.get("cached_at") if isinstance(record, dict) else None
    return float(stamp) if isinstance(stamp, int | float) else float("inf")


class _Skip(BaseModel):
    """Stands for an unreadable outbox line: counted as sent, never published."""


class Reporter:
    """The thread that publishes the worker's reports, in submission order.

    ``submit(..., durable=True)`` (logs, finished): resolves True once confirmed, False once
    cached in the outbox. ``durable=False`` (started, fetch): resolves True or raises the
    broker error, since the caller decides what to do (requeue the task, fail the fetch).
    """

    def __init__(
        self,
        connect: Callable[[], PublisherLike],
        outbox: Outbox,
        *,
        max_queued: int = 256,
        batch_max: int = 32,
    ) -> None:
        self._connect = connect
        self._outbox = outbox
        self._queue: queue.Queue[tuple[Outgoing, bool, Future[bool]]] = queue.Queue(max_queued)
        self._batch_max = batch_max
        self._publisher: PublisherLike | None = None
        self._next_connect = 0.0
        self._held: list[tuple[Outgoing, Future[bool]]] = []
        """Durable reports neither the broker nor the disk took yet, oldest first."""
        self._next_held_try = 0.0
        self._unwritable = ""
        """Why the outbox cannot be written ("" while it can); the worker's refusal."""

    def refusal(self) -> str:
        """Why no new task should be taken for the reporter's sake; "" when none."""
        unwritable = self._unwritable
        if not unwritable:
            return ""
        return f"report cache not writable ({unwritable}); {len(self._held)} reports held"

    def submit(self, item: Outgoing, *, durable: bool = True) -> Future[bool]:
        """Queue ``item``; blocks while the queue is full (back-pressure on the package)."""
        future: Future[bool] = Future()
        self._queue.put((item, durable, future))
        return future

    def run(self, stop: threading.Event) -> None:
        """Publish until ``stop`` is set and everything submitted has been handled."""
        try:
            while not (stop.is_set() and self._queue.empty() and not self._held):
                if self._held:  # back-pressure: nothing new until the held ones are placed
                    if stop.is_set():
                        self._drain_at_stop()
                        break
                    self._retry_held(stop)
                    continue
                batch = self._take(timeout=0.2)
                publisher = self._publisher_or_none()
                if publisher is not None and len(self._outbox):
                    self._resend(publisher)
                if batch:
                    self._handle(batch)
        finally:
            self._give_up_held()
            self._disconnect()

    def _take(self, timeout: float) -> list[tuple[Outgoing, bool, Future[bool]]]:
        try:
            batch = [self._queue.get(timeout=timeout)]
        except queue.Empty:
            return []
        while len(batch) < self._batch_max:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _handle(self, batch: list[tuple[Outgoing, bool, Future[bool]]]) -> None:
        publisher = self._publisher_or_none()
        if publisher is None or len(self._outbox):
            self._set_aside(batch, BrokerUnavailable("broker unavailable; report cached"))
            return
        items = [(o.exchange, o.routing_key, o.message) for o, _, _ in batch]
        try:
            errors = publisher.publish_batch(items)
        except BrokerError as exc:
            errors = [exc] * len(batch)
        first_failure = next((i for i, e in enumerate(errors) if e is not None), None)
        for _, _, future in batch[:first_failure]:
            future.set_result(True)
        if first_failure is not None:
            error = errors[first_failure]
            assert error is not None
            logger.warning("reporter.publish_failed: %s", error)
            if isinstance(error, BrokerUnavailable):
                self._disconnect()
            self._set_aside(batch[first_failure:], error)

    def _set_aside(
        self, batch: list[tuple[Outgoing, bool, Future[bool]]], error: BrokerError
    ) -> None:
        """Durable reports go to the outbox in order (or are held while it cannot be
        written); the others fail with ``error``."""
        for outgoing, durable, future in batch:
            if durable:
                self._held.append((outgoing, future))
            else:
                future.set_exception(error)
        self._cache_held()

    def _cache_held(self) -> bool:
        """Write the held reports to the outbox; False (and still held) when it fails."""
        if not self._held:
            return True
        try:
            self._outbox.append([o for o, _ in self._held])
        except OSError as exc:
            self._cache_failed(exc)
            return False
        for _, future in self._held:
            future.set_result(False)
        self._held = []
        if self._unwritable:
            logger.warning(
                "outbox.write_recovered: the report cache is writable again (was: %s)",
                self._unwritable,
            )
            self._unwritable = ""
        return True

    def _cache_failed(self, exc: OSError) -> None:
        metrics.WORKER_OUTBOX_WRITE_FAILURES.inc()
        self._next_held_try = time.monotonic() + _HELD_RETRY_S
        if self._unwritable:
            return
        self._unwritable = exc.strerror or type(exc).__name__
        logger.error(
            "outbox.write_failed: cannot cache %d unsent reports in %s: %s; they are held "
            "in memory and tried again every %g s, and no new task is taken until then",
            len(self._held),
            self._outbox.path,
            exc,
            _HELD_RETRY_S,
            extra={"count": len(self._held), "errno": exc.errno, "path": str(self._outbox.path)},
        )

    def _retry_held(self, stop: threading.Event) -> None:
        """One more try for the held reports: the broker when it answers, else the disk."""
        stop.wait(max(0.0, self._next_held_try - time.monotonic()))
        self._next_held_try = time.monotonic() + _HELD_RETRY_S
        publisher = self._publisher_or_none()
        if publisher is not None and len(self._outbox):
            self._resend(publisher)
        if publisher is not None and not len(self._outbox):
            held, self._held = self._held, []
            self._handle([(o, True, f) for o, f in held])  # what fails is held again
            if not self._held and self._unwritable:
                logger.warning("outbox.write_recovered: held reports sent to the broker")
                self._unwritable = ""
            return
        self._cache_held()

    def _drain_at_stop(self) -> None:
        """Stopping with reports held: take what was still submitted, try once more."""
        while True:
            batch = self._take(timeout=0)
            if not batch:
                break
            for outgoing, durable, future in batch:
                if durable:
                    self._held.append((outgoing, future))
                else:
                    future.set_exception(BrokerUnavailable("the worker is stopping"))
        self._next_held_try = 0.0
        self._retry_held(threading.Event())

    def _give_up_held(self) -> None:
        if not self._held:
            return
        held, self._held = self._held, []
        metrics.WORKER_REPORTS_LOST.inc(len(held))
        logger.error(
            "outbox.lost: %d reports were neither confirmed by the broker nor cached on disk "
            "(%s) when the reporter stopped; the master will expire their attempts",
            len(held),
            self._unwritable or "stopped",
            extra={"count": len(held)},
        )
        for _, future in held:
            future.set_exception(ReportLost("report neither confirmed nor cached"))

    def _resend(self, publisher: PublisherLike) -> None:
        def send(chunk: list[Outgoing]) -> int:
            real = [(o.exchange, o.routing_key, o.message) for o in chunk if o.exchange]
            try:
                errors = iter(publisher.publish_batch(real)) if real else iter(())
            except BrokerError:
                return 0
            confirmed = 0
            for outgoing in chunk:
                if outgoing.exchange and next(errors) is not None:
                    break
                confirmed += 1
            return confirmed

        before = len(self._outbox)
        try:
            sent = self._outbox.resend(send)
        except OSError as exc:  # sent, but not yet removed from the file: sent again later
            logger.warning("outbox.resend_failed: %s", exc)
            self._disconnect()
            return
        logger.info(
            "outbox.resent: %d of %d cached reports",
            sent,
            before,
            extra={"sent": sent, "cached": before},
        )
        if sent < before:
            self._disconnect()

    def _publisher_or_none(self) -> PublisherLike | None:
        if self._publisher is not None:
            return self._publisher
        now = time.monotonic()
        if now < self._next_connect:
            return None
        self._next_connect = now + _RECONNECT_EVERY_S
        try:
            self._publisher = self._connect()
        except BrokerError as exc:
            logger.warning("reporter.connect_failed: %s", exc)
            return None
        return self._publisher

    def _disconnect(self) -> None:
        publisher, self._publisher = self._publisher, None
        if publisher is not None:
            try:
                publisher.close()
            except BrokerError:
                logger.debug("reporter.close_failed")
