"""The worker's disk, kept bounded: old task folders and project versions go, by age and
by total size, oldest first, on a loop thread of its own.

What is swept, every ``RetentionSweepInterval``:

- ``TasksRootFolder``: one entry per attempt, ``<task_id>/<attempt>/`` and its
  ``<task_id>/<attempt>.log``; a ``<task_id>`` folder left empty goes too. An attempt the
  registry holds (reserved or running) is never removed.
- ``ExecutionLogCacheFolder``: the outbox bounds itself (:meth:`Outbox.prune`), under the
  lock it sends with, so a report is never removed while it may still be sent.
- the project cache: one entry per version, ``<hash>/`` and ``<hash>.zip``, aged by its
  last use. A version a running attempt uses, or one taken from the store recently (an
  assignment between fetching it and running), is never removed.

Names this module did not write (anything that is not a task id, an attempt number or a
content hash) are never touched. A path that cannot be removed is logged and counted; the
loop goes on.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import stat
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from dispatcher import metrics
from schemas.states import AttemptKey

logger = logging.getLogger(__name__)

MIB = 1024 * 1024

TASK_FOLDER = "task_folder"
LOG_CACHE = "log_cache"
PROJECT_CACHE = "project_cache"
"""The ``what`` label of the removal metrics."""

PROJECT_IN_USE_GRACE_S = 600.0
"""A version taken from the store this recently is kept: the assignment that took it may
still be preparing its folder, waiting for its started confirm or for the rest of its
batch, and is not in the registry's running set yet."""

_HASH = re.compile(r"^[0-9a-f]{64}$")
_HASH_PREFIX = re.compile(r"^[0-9a-f]{12}")
LEFTOVER_MIN_AGE_S = 86400.0
"""The store's temporary files go only by age, and never younger than this: one may be an
extraction in progress."""
_WARNED_MAX = 1024
"""Paths whose removal failed and was logged as a warning; later failures log at debug."""


@dataclass(frozen=True, slots=True)
class Bound:
    """Keep entries for ``retention_s`` and at most ``max_bytes`` in all."""

    retention_s: float
    max_bytes: int


@dataclass(frozen=True, slots=True)
class Entry:
    """One unit of removal: an attempt's folder and log, or a project version."""

    key: str
    paths: tuple[Path, ...]
    mtime: float
    """Its last change (Unix time): the newest mtime of its top-level paths."""
    size: int


def select(
    entries: Iterable[Entry], bound: Bound, *, now: float, keep: Callable[[Entry], bool]
) -> list[Entry]:
    """The entries to remove, oldest first: every one past ``bound.retention_s``, then the
    oldest others while the total is above ``bound.max_bytes``. A kept entry counts in the
    total but is never chosen, so kept entries alone may leave the total above the bound."""
    ordered = sorted(entries, key=lambda e: (e.mtime, e.key))
    total = sum(e.size for e in ordered)
    cutoff = now - bound.retention_s
    chosen: list[Entry] = []
    for entry in ordered:
        if keep(entry):
            continue
        if entry.mtime <= cutoff or total > bound.max_bytes:
            chosen.append(entry)
            total -= entry.size
    return chosen


# -- scanning -------------------------------------------------------------------------------


class Sizes:
    """Sizes of entries, remembered by a signature of their top-level paths (inode, mtime,
    size). An attempt that has ended no longer changes, and walking a year of attempts on
    every sweep would cost more than the sweep saves. Entries still in use are walked each
    time (``remember=False``): a running package writes below its top level."""

    def __init__(self) -> None:
        self._known: dict[str, tuple[tuple[int, ...], int]] = {}

    def size(self, key: str, paths: tuple[Path, ...], *, remember: bool = True) -> int:
        signature = _signature(paths)
        known = self._known.get(key)
        if remember and known is not None and known[0] == signature:
            return known[1]
        size = sum(tree_size(path) for path in paths)
        if remember:
            self._known[key] = (signature, size)
        else:
            self._known.pop(key, None)
        return size

    def forget(self, keys: Iterable[str]) -> None:
        for key in keys:
            self._known.pop(key, None)

    def keep_only(self, keys: Collection[str]) -> None:
        """Forget the sizes of entries no longer on disk."""
        self.forget([k for k in self._known if k not in keys])


def _signature(paths: tuple[Path, ...]) -> tuple[int, ...]:
    out: list[int] = []
    for path in paths:
        try:
            st = path.lstat()
        except OSError:
            out.extend((0, 0, 0))
            continue
        out.extend((st.st_ino, st.st_mtime_ns, st.st_size))
    return tuple(out)


def tree_size(path: Path) -> int:
    """Bytes of the files under ``path`` (links not followed); what cannot be read counts 0."""
    try:
        st = path.lstat()
    except OSError:
        return 0
    if not stat.S_ISDIR(st.st_mode):
        return st.st_size
    total = 0
    for root, dirs, files in os.walk(path, onerror=lambda _exc: None):
        for name in (*files, *dirs):
            try:
                child = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            if not stat.S_ISDIR(child.st_mode):
                total += child.st_size
    return total


def _mtime(paths: Iterable[Path]) -> float | None:
    times = []
    for path in paths:
        try:
            times.append(path.lstat().st_mtime)
        except OSError:
            continue
    return max(times) if times else None


def attempt_key(task_id: uuid.UUID | str, attempt: int | str) -> str:
    return f"{task_id}/{attempt}"


def task_entries(root: Path, held: Collection[str], sizes: Sizes) -> list[Entry]:
    """Every attempt under ``root``: ``<task_id>/<attempt>/`` with ``<attempt>.log``.

    The folder's own mtime may be the project's (``copytree`` copies it), so the log's
    mtime, written until the package ends, is what usually dates an attempt."""
    entries = []
    for task_dir in _children(root):
        if not _is_task_id(task_dir.name) or not task_dir.is_dir():
            continue
        for attempt, paths in _attempts(task_dir).items():
            entry = _entry(attempt_key(task_dir.name, attempt), paths, held, sizes)
            if entry is not None:
                entries.append(entry)
    sizes.keep_only({e.key for e in entries})
    return entries


def _attempts(task_dir: Path) -> dict[int, tuple[Path, ...]]:
    found: dict[int, list[Path]] = {}
    for child in _children(task_dir):
        name = child.name.removesuffix(".log")
        if name.isdigit() and name == str(int(name)):
            found.setdefault(int(name), []).append(child)
    return {attempt: tuple(sorted(paths)) for attempt, paths in found.items()}


def project_entries(folder: Path, sizes: Sizes) -> list[Entry]:
    """Every cached version under ``folder`` (``<hash>/`` and ``<hash>.zip``, keyed by the
    hash), and the store's temporary files (``.<name>``, keyed by their name): a staging
    folder or archive a crash left behind."""
    found: dict[str, list[Path]] = {}
    for child in _children(folder):
        name = child.name.removesuffix(".zip")
        if _HASH.match(name):
            found.setdefault(name, []).append(child)
        elif child.name.startswith(".") and _HASH_PREFIX.match(child.name[1:]):
            found[child.name] = [child]
    entries = []
    for key, paths in found.items():
        entry = _entry(key, tuple(sorted(paths)), (), sizes)
        if entry is not None:
            entries.append(entry)
    sizes.keep_only({e.key for e in entries})
    return entries


def _entry(key: str, paths: tuple[Path, ...], held: Collection[str], sizes: Sizes) -> Entry | None:
    mtime = _mtime(paths)
    if mtime is None:  # removed meanwhile
        return None
    return Entry(key, paths, mtime, sizes.size(key, paths, remember=key not in held))


def _children(folder: Path) -> Iterator[Path]:
    try:
        yield from sorted(folder.iterdir())
    except FileNotFoundError:
        return


def _is_task_id(name: str) -> bool:
    try:
        return str(uuid.UUID(name)) == name
    except ValueError:
        return False


# -- removing -------------------------------------------------------------------------------


Remover = Callable[[Path], None]
"""Removes one path (a folder and its tree, or a file); raises ``OSError`` if it cannot."""


def remove_path(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        failures: list[BaseException] = []

        def failed(
            _func: object, _path: str, exc_info: tuple[object, BaseException, object]
        ) -> None:
            failures.append(exc_info[1])

        shutil.rmtree(path, onerror=failed)
        if failures:  # rmtree went on past them; the first says why the entry stays
            error = failures[0]
            raise error if isinstance(error, OSError) else OSError(str(error))
    else:
        path.unlink(missing_ok=True)


class Removals:
    """Removes entries, counts them by ``what`` and logs the paths that resist, once each."""

    def __init__(self, remove: Remover = remove_path) -> None:
        self._remove = remove
        self._warned: set[Path] = set()

    def remove(self, entry: Entry, what: str, reason: str) -> bool:
        for path in entry.paths:
            try:
                self._remove(path)
            except OSError as exc:
                self._failed(path, what, exc)
                return False
        metrics.WORKER_DISK_REMOVED.labels(what=what).inc()
        metrics.WORKER_DISK_REMOVED_BYTES.labels(what=what).inc(entry.size)
        logger.debug("retention.removed: %s %s (%s)", what, entry.key, reason)
        return True

    def _failed(self, path: Path, what: str, exc: OSError) -> None:
        metrics.WORKER_DISK_REMOVE_FAILED.labels(what=what).inc()
        first = path not in self._warned and len(self._warned) < _WARNED_MAX
        if first:
            self._warned.add(path)
        logger.log(
            logging.WARNING if first else logging.DEBUG,
            "retention.remove_failed: %s %s: %s",
            what,
            path,
            exc,
            extra={"what": what, "path": str(path), "error": type(exc).__name__},
        )


# -- the loop -------------------------------------------------------------------------------


class OutboxLike(Protocol):
    def prune(self) -> int: ...


class ProjectCache(Protocol):
    """What the sweep needs of :class:`consumers.worker.projects.ProjectStore`."""

    @property
    def folder(self) -> Path: ...
    def recently_used(self, within_s: float) -> set[str]: ...
    def removing(self) -> AbstractContextManager[None]: ...
    def forget(self, project_hash: str) -> None: ...


@dataclass(frozen=True, slots=True)
class Policy:
    tasks: Bound
    projects: Bound
    interval_s: float


class Retention:
    """The sweep loop: tasks folder, log cache, project cache, every ``interval_s``."""

    def __init__(
        self,
        policy: Policy,
        *,
        tasks_root: Path,
        held_attempts: Callable[[], Collection[AttemptKey]],
        held_projects: Callable[[], Collection[str]],
        projects: ProjectCache,
        outbox: OutboxLike,
        removals: Removals | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._policy = policy
        self._tasks_root = tasks_root
        self._held_attempts = held_attempts
        self._held_projects = held_projects
        self._projects = projects
        self._outbox = outbox
        self._removals = removals or Removals()
        self._clock = clock
        self._task_sizes = Sizes()
        self._project_sizes = Sizes()

    def run(self, stop: threading.Event) -> None:
        """Sweep at once (a restarted worker may find a full disk), then every interval."""
        while not stop.is_set():
            self.sweep()
            stop.wait(self._policy.interval_s)

    def sweep(self) -> None:
        """One pass over the three folders; an error in one does not skip the others."""
        for what, part in (
            (TASK_FOLDER, self.sweep_tasks),
            (LOG_CACHE, self._outbox.prune),
            (PROJECT_CACHE, self.sweep_projects),
        ):
            try:
                part()
            except OSError as exc:
                metrics.WORKER_DISK_REMOVE_FAILED.labels(what=what).inc()
                logger.warning("retention.sweep_failed: %s: %s", what, exc, extra={"what": what})

    def sweep_tasks(self) -> int:
        """Remove attempts past retention or over the size bound; how many went."""
        held = self._held_task_keys()
        entries = task_entries(self._tasks_root, held, self._task_sizes)
        chosen = select(
            entries, self._policy.tasks, now=self._clock(), keep=lambda e: e.key in held
        )
        removed = 0
        for entry in chosen:
            # Asked again right before each removal: an attempt reserved since the scan
            # (a redelivery after a restart) is preparing this very folder.
            if entry.key in self._held_task_keys():
                continue
            if self._removals.remove(entry, TASK_FOLDER, self._reason(entry, self._policy.tasks)):
                removed += 1
                self._task_sizes.forget([entry.key])
        self._remove_empty_task_dirs({e.paths[0].parent for e in chosen})
        if removed:
            logger.info("retention.swept: %d attempt folders removed", removed)
        return removed

    def sweep_projects(self) -> int:
        """Remove project versions past retention or over the size bound, never one in use."""
        entries = project_entries(self._projects.folder, self._project_sizes)
        bound = self._policy.projects
        leftover_cutoff = self._clock() - max(bound.retention_s, LEFTOVER_MIN_AGE_S)
        removed = 0
        # The store marks a version used under this lock before it looks at the folder, so
        # a version is either marked (and kept here) or removed before the store looks.
        with self._projects.removing():
            in_use = set(self._held_projects()) | self._projects.recently_used(
                PROJECT_IN_USE_GRACE_S
            )

            def keep(entry: Entry) -> bool:
                if entry.key.startswith("."):
                    return entry.mtime > leftover_cutoff
                return entry.key in in_use

            for entry in select(entries, bound, now=self._clock(), keep=keep):
                if self._removals.remove(entry, PROJECT_CACHE, self._reason(entry, bound)):
                    removed += 1
                    self._project_sizes.forget([entry.key])
                    self._projects.forget(entry.key)
        if removed:
            logger.info("retention.swept: %d cached project versions removed", removed)
        return removed

    def _held_task_keys(self) -> set[str]:
        return {attempt_key(task_id, attempt) for task_id, attempt in self._held_attempts()}

    def _reason(self, entry: Entry, bound: Bound) -> str:
        return "age" if entry.mtime <= self._clock() - bound.retention_s else "size"

    def _remove_empty_task_dirs(self, task_dirs: Iterable[Path]) -> None:
        held = {str(task_id) for task_id, _ in self._held_attempts()}
        for task_dir in task_dirs:
            if task_dir.name in held:  # a new attempt of this task may be creating its folder
                continue
            try:
                task_dir.rmdir()
            except OSError:
                continue  # not empty (another attempt, or one being prepared): kept
