"""Project archives on the worker: fetched from the master by content hash, verified,
cached by that hash, extracted once.

The worker holds no catalog credentials: it publishes a :class:`ProjectFetch` and the
master answers with a :class:`ProjectArchive` on the worker's control queue, which the
control handler hands to :meth:`ProjectStore.deliver`. Bytes whose SHA-256 is not the hash
asked for are refused, whoever sent them.
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
import os
import shutil
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from schemas.messages import ProjectArchive
from schemas.project import ArchiveError, ProjectManifest, content_hash, read_manifest

logger = logging.getLogger(__name__)
_TOUCH_EVERY_S = 60.0

MAX_EXTRACTED_BYTES = 1024 * 1024 * 1024
"""A zip bomb stops here."""


class ProjectUnavailable(ValueError):
    """The archive cannot be used (not found, hash mismatch, invalid); the task fails."""


class FetchFailed(RuntimeError):
    """The archive could not be asked for or did not arrive in time; worth another try."""


@dataclass(frozen=True, slots=True)
class Project:
    project_hash: str
    root: Path
    """The extracted archive; read-only by convention: each task copies it."""
    manifest: ProjectManifest


@dataclass
class _Pending:
    done: threading.Event = field(default_factory=threading.Event)
    archive: bytes | None = None
    error: str = ""


class ProjectStore:
    """Archives by hash under ``cache_folder``: ``<hash>.zip`` and ``<hash>/`` extracted."""

    def __init__(
        self,
        cache_folder: Path,
        request: Callable[[str], None],
        *,
        timeout_s: float,
        stopping: threading.Event | None = None,
    ) -> None:
        self._stopping = stopping or threading.Event()
        self._folder = cache_folder
        self._folder.mkdir(parents=True, exist_ok=True)
        self._request = request
        self._timeout_s = timeout_s
        self._lock = threading.Lock()
        self._pending: dict[str, _Pending] = {}
        self._manifests: dict[str, ProjectManifest] = {}
        self._use_lock = threading.RLock()
        """Held by the retention sweep while it removes versions (:meth:`removing`), and by
        every read or write of ``_used``: a get() that starts meanwhile waits for it."""
        self._used: dict[str, float] = {}
        """hash -> when :meth:`get` last handed it out (monotonic)."""
        self._touched: dict[str, float] = {}
        """hash -> when its folder's mtime was last set (see _mark_used)."""
        self._checked: dict[str, tuple[Project, float]] = {}
        """hash -> the project and when its folder was last seen on disk: within a minute
        of that, :meth:`get` hands it out without a system call (a ``stat`` per task was
        7 % of a busy worker's samples). Forgotten with the version (:meth:`forget`)."""

    @property
    def folder(self) -> Path:
        return self._folder

    def get(self, project_hash: str) -> Project:
        """The extracted project; fetches it first when it is not cached."""
        self._mark_used(project_hash)  # before looking: a sweep now keeps it, or is done
        checked = self._checked.get(project_hash)
        if checked is not None and time.monotonic() - checked[1] < _TOUCH_EVERY_S:
            return checked[0]
        root = self._folder / project_hash
        if not root.is_dir():
            self._extract(project_hash, self._cached_or_fetched(project_hash), root)
        self._mark_used(project_hash, root)
        manifest = self._manifests.get(project_hash)
        if manifest is None:
            try:
                manifest = ProjectManifest.model_validate_json(
                    (root / "manifest.json").read_bytes()
                )
            except (OSError, ValueError) as exc:
                msg = f"project {project_hash[:12]}: cached manifest unreadable: {exc}"
                raise ProjectUnavailable(msg) from None
            self._manifests[project_hash] = manifest
        project = Project(project_hash, root, manifest)
        self._checked[project_hash] = (project, time.monotonic())
        return project

    def recently_used(self, within_s: float) -> set[str]:
        """Versions handed out by :meth:`get` in the last ``within_s`` seconds."""
        cutoff = time.monotonic() - within_s
        with self._use_lock:
            for old in [h for h, at in self._used.items() if at < cutoff]:
                del self._used[old]
            return set(self._used)

    @contextmanager
    def removing(self) -> Iterator[None]:
        """Hold off :meth:`get` while versions are chosen and removed."""
        with self._use_lock:
            yield

    def forget(self, project_hash: str) -> None:
        """The version was removed from disk: drop what is remembered of it."""
        self._manifests.pop(project_hash, None)
        with self._use_lock:
            self._checked.pop(project_hash, None)
            self._touched.pop(project_hash, None)

    def _mark_used(self, project_hash: str, root: Path | None = None) -> None:
        now = time.monotonic()
        with self._use_lock:
            self._used[project_hash] = now
            if (
                root is not None
                and now - self._touched.get(project_hash, -_TOUCH_EVERY_S) < _TOUCH_EVERY_S
            ):
                root = None  # touched within the minute
            if root is not None:
                self._touched[project_hash] = now
        if root is not None:
            # The folder's mtime is its last use, so a restarted worker ages it right;
            # once a minute is exact enough for retention counted in days, and spares a
            # system call per task.
            with suppress(OSError):
                os.utime(root)

    def deliver(self, reply: ProjectArchive) -> None:
        """An archive from the master: completes the fetch that waits for its hash."""
        with self._lock:
            pending = self._pending.get(reply.project_hash)
        if pending is None:
            logger.info("project.unsolicited: %s", reply.project_hash[:12])
            return
        if not reply.found:
            pending.error = f"the master has no project archive with hash {reply.project_hash}"
        else:
            try:
                archive = base64.b64decode(reply.archive_b64, validate=True)
            except (binascii.Error, ValueError):
                pending.error = "project archive reply is not valid base64"
            else:
                actual = content_hash(archive)
                if actual == reply.project_hash:
                    pending.archive = archive
                else:
                    pending.error = (
                        f"project archive hash mismatch: asked for {reply.project_hash}, "
                        f"received bytes hashing to {actual}"
                    )
        pending.done.set()

    def _cached_or_fetched(self, project_hash: str) -> bytes:
        cached = self._folder / f"{project_hash}.zip"
        if cached.exists():
            archive = cached.read_bytes()
            if content_hash(archive) == project_hash:
                return archive
            logger.warning("project.cache_corrupt: %s refetched", project_hash[:12])
        archive = self._fetch(project_hash)
        _write_atomic(cached, archive)
        return archive

    def _fetch(self, project_hash: str) -> bytes:
        with self._lock:
            pending = self._pending.setdefault(project_hash, _Pending())
        try:
            try:
                self._request(project_hash)
            except Exception as exc:  # the broker's error, whatever its class
                msg = f"could not ask the master for project {project_hash[:12]}: {exc}"
                raise FetchFailed(msg) from exc
            if not self._wait(pending):
                waited = f"{self._timeout_s:g} s"
                msg = f"no reply from the master for project {project_hash[:12]} in {waited}"
                raise FetchFailed(msg)
        finally:
            with self._lock:
                self._pending.pop(project_hash, None)
        if pending.archive is None:
            raise ProjectUnavailable(pending.error)
        return pending.archive

    def _wait(self, pending: _Pending) -> bool:
        deadline = time.monotonic() + self._timeout_s
        while not pending.done.wait(0.2):
            if self._stopping.is_set():
                msg = "the worker is stopping"
                raise FetchFailed(msg)
            if time.monotonic() >= deadline:
                return False
        return True

    def _extract(self, project_hash: str, archive: bytes, root: Path) -> None:
        try:
            manifest = read_manifest(archive)
        except ArchiveError as exc:
            msg = f"project {project_hash[:12]} is not a usable archive: {exc}"
            raise ProjectUnavailable(msg) from None
        staging = Path(tempfile.mkdtemp(prefix=f".{project_hash[:12]}-", dir=self._folder))
        try:
            extract_safely(archive, staging)
            try:
                staging.rename(root)
            except OSError:  # another thread extracted it first; same bytes, same content
                if not root.is_dir():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        self._manifests[project_hash] = manifest


def extract_safely(archive: bytes, target: Path) -> None:
    """Extract ``archive`` into ``target``, refusing entries that would land outside it."""
    total = 0
    with zipfile.ZipFile(io.BytesIO(archive)) as zf:
        for info in zf.infolist():
            parts = PurePosixPath(info.filename).parts
            if info.filename.startswith("/") or ".." in parts or "\\" in info.filename:
                msg = f"archive entry {info.filename!r} points outside the project"
                raise ProjectUnavailable(msg)
            total += info.file_size
            if total > MAX_EXTRACTED_BYTES:
                msg = f"archive expands past {MAX_EXTRACTED_BYTES} bytes"
                raise ProjectUnavailable(msg)
        zf.extractall(target)
        for info in zf.infolist():  # keep the executable bit, as a packaged script needs
            mode = (info.external_attr >> 16) & 0o777
            if mode & 0o111 and not info.is_dir():
                (target / info.filename).chmod(mode)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{threading.get_ident()}.tmp")
    try:
        tmp.write_bytes(data)
        tmp.replace(path)
    except OSError:
        tmp.unlink(missing_ok=True)  # a torn copy would only take the space a retry needs
        raise
