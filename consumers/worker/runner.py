"""Running one package: its parameters, its process group, its output lines.

A command package runs as ``argv`` with ``{Name}`` placeholders filled in; a callable
package runs as ``python -c <shim> module:function`` with its parameters as JSON on stdin.
Either way the process starts a new session (``start_new_session``), so one ``killpg``
reaches everything it spawned, and on Linux it dies with its worker: the parent-death signal
(``PR_SET_PDEATHSIG``, SIGKILL) is set between fork and exec (by ``setpriv``, else in
``preexec_fn``: :func:`tied_to_worker`), so a ``kill -9`` of the worker
kills the package too (``consumers/worker/orphans.py`` stops what the package left running
when the worker restarts). When the package ends, what it left in its group is killed;
a stop also reaches what carries the attempt's mark outside the group (``marks.py``).
Every parameter is also in the environment as ``SSIS_PARAM_<NAME>``; sensitive values go
there only and are never logged.

Output is read line by line into a bounded queue: a package that writes faster than the
worker can send blocks on its pipe instead of growing the worker's memory.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Literal, Protocol

import psutil

from schemas.messages import ParameterScalar, ParameterValue
from schemas.project import CallableEntry, PackageSpec, ParameterSpec, ProjectManifest

from . import marks

Source = Literal["stdout", "stderr", "agent"]
MAX_LINE_CHARS = 8192
_READ_CHUNK = 64 * 1024
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_.-]*)\}")
_ENV_UNSAFE = re.compile(r"[^A-Z0-9_]")
_ERRORISH = re.compile(r"^\s*(error|fatal|critical|traceback|exception)\b", re.IGNORECASE)
_PROGRESSISH = re.compile(r"^\s*((?i:progress)\b|##scaleout\[progress\])")
"""SSIS-style ``Progress: ...`` lines, and the marker of ``consumers/worker/progress.py``."""
_WORKER_ENV_PREFIX = "SCALEOUT_"
"""The worker's own settings (broker URL, key paths) are not the package's business."""
_PR_SET_PDEATHSIG = 1

MESSAGE_TYPE_INFO, MESSAGE_TYPE_WARNING, MESSAGE_TYPE_ERROR, MESSAGE_TYPE_PROGRESS = (
    70,
    110,
    120,
    60,
)

_CALLABLE_SHIM = """\
import importlib, json, sys
sys.path.insert(0, ".")
module, _, function = sys.argv[1].partition(":")
params = json.loads(sys.stdin.read() or "{}")
result = getattr(importlib.import_module(module), function)(params)
sys.exit(result if isinstance(result, int) and not isinstance(result, bool) else 0)
"""


class PackageError(ValueError):
    """The task cannot run as assigned (unknown package, bad parameter, ...); says why."""


@dataclass(frozen=True, slots=True)
class Parameter:
    name: str
    value: ParameterScalar
    sensitive: bool


@dataclass(frozen=True, slots=True)
class Launch:
    """What to start: argv, the environment to add, and the bytes for stdin (or None)."""

    argv: tuple[str, ...]
    env: Mapping[str, str]
    stdin: bytes | None = None


@dataclass(frozen=True, slots=True)
class Line:
    source: Source
    text: str
    time: datetime
    message_type: int


def resolve_parameters(
    manifest: ProjectManifest, package: PackageSpec, assigned: Sequence[ParameterValue]
) -> tuple[dict[str, Parameter], tuple[str, ...]]:
    """Each declared parameter's value (assigned, else default), coerced to its type.

    Returns the parameters and notes about assigned values nobody declared; raises
    :class:`PackageError` for a missing required parameter or a value of the wrong type.
    """
    project_level = {p.name: p for p in manifest.parameters}
    package_level = {p.name: p for p in package.parameters}
    given: dict[tuple[int, str], ParameterValue] = {(v.object_type, v.name): v for v in assigned}
    resolved: dict[str, Parameter] = {}
    for object_type, specs in ((20, project_level), (30, package_level)):
        for spec in specs.values():
            value = given.get((object_type, spec.name))
            resolved[spec.name] = _resolve_one(package.name, spec, value)
    notes = tuple(
        f"parameter {v.name} (object type {v.object_type}) is not declared; ignored"
        for v in assigned
        if v.object_type != 50
        and v.name not in (project_level if v.object_type == 20 else package_level)
    )
    return resolved, notes


def _resolve_one(package: str, spec: ParameterSpec, given: ParameterValue | None) -> Parameter:
    raw = given.value if given is not None else spec.default
    if raw is None and spec.required:
        msg = f"package {package}: required parameter {spec.name} has no value"
        raise PackageError(msg)
    try:
        value = spec.coerce(raw)
    except ValueError:
        # ParameterSpec.coerce echoes the value; a sensitive one must not reach a report.
        shown = "a sensitive value" if spec.sensitive or (given and given.sensitive) else repr(raw)
        msg = f"package {package}: parameter {spec.name} takes a {spec.type}, not {shown}"
        raise PackageError(msg) from None
    return Parameter(spec.name, value, spec.sensitive or bool(given and given.sensitive))


def env_name(parameter: str) -> str:
    """``SSIS_PARAM_<NAME>``: upper case, anything but letters, digits and _ as _."""
    return "SSIS_PARAM_" + _ENV_UNSAFE.sub("_", parameter.upper())


def as_text(value: ParameterScalar) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def build_launch(
    package: PackageSpec, parameters: Mapping[str, Parameter], *, python: str = sys.executable
) -> Launch:
    """The argv, environment and stdin that run ``package`` with ``parameters``."""
    env = {env_name(p.name): as_text(p.value) for p in parameters.values()}
    if isinstance(package.entry, CallableEntry):
        values = {p.name: p.value for p in parameters.values()}
        argv = (python, "-c", _CALLABLE_SHIM, package.entry.callable)
        return Launch(argv=argv, env=env, stdin=json.dumps(values).encode())

    def fill(match: re.Match[str]) -> str:
        name = match[1]
        if name == "python":
            return python
        parameter = parameters[name]
        if parameter.sensitive:  # the manifest refuses this; an assigned flag can add it
            msg = f"package {package.name}: sensitive {name} may not appear in argv"
            raise PackageError(msg)
        return as_text(parameter.value)

    return Launch(argv=tuple(_PLACEHOLDER.sub(fill, arg) for arg in package.entry.argv), env=env)


def child_environment(
    extra: Mapping[str, str], base: Mapping[str, str] = os.environ
) -> dict[str, str]:
    """The package's environment: the worker's, minus its own settings, plus ``extra``."""
    env = {k: v for k, v in base.items() if not k.startswith(_WORKER_ENV_PREFIX)}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def _load_prctl() -> Callable[..., int] | None:
    """libc's ``prctl``, looked up once at import: the child between fork and exec must
    not import or allocate much, since other threads' locks are frozen there."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return prctl


_PRCTL = _load_prctl()


def _die_with_parent(parent_pid: int) -> None:
    """Runs in the package's process between fork and exec: SIGKILL it when the worker
    thread that started it dies. The worker may have died before ``prctl`` took effect;
    then the parent is already someone else, and the package must not start at all."""
    assert _PRCTL is not None
    _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:
        os.kill(os.getpid(), signal.SIGKILL)


def die_with_worker() -> Callable[[], None] | None:
    """The ``preexec_fn`` that ties a package's life to this process; None off Linux."""
    if _PRCTL is None:
        return None
    return functools.partial(_die_with_parent, os.getpid())


def _usable_setpriv() -> str | None:
    """The path of a ``setpriv`` that knows ``--pdeathsig`` (util-linux 2.33 and later),
    or None. Asked once, when the worker imports this module."""
    path = shutil.which("setpriv") if sys.platform.startswith("linux") else None
    if path is None:
        return None
    try:
        done = subprocess.run(
            [path, "--help"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return path if "--pdeathsig" in done.stdout else None


SETPRIV = _usable_setpriv()
"""util-linux's ``setpriv``: ``setpriv --pdeathsig KILL -- argv`` sets the signal and execs
the package in the same process. Preferred to ``preexec_fn``, which makes Python fork the
whole worker while holding the GIL: measured here, a package start costs the worker
0.2 ms of CPU with setpriv (the child ~1 ms more, for one more exec), 1.4 ms with
``preexec_fn``. The price: setpriv cannot see that the worker died in the instant before
it set the signal; the restarted worker's sweep stops such a package."""


@dataclass(frozen=True, slots=True)
class Spawn:
    """How to start a package so that it dies with its worker."""

    argv: tuple[str, ...]
    preexec: Callable[[], None] | None = None


def tied_to_worker(argv: Sequence[str], cwd: Path, env: Mapping[str, str]) -> Spawn:
    """``argv`` wrapped so the package gets SIGKILL when this worker dies (Linux). With
    setpriv the program is looked up here, so a missing one is still refused by ``start``
    (``OSError``) and not reported as a package that exited 127."""
    setpriv = SETPRIV
    if setpriv is None:
        return Spawn(tuple(argv), die_with_worker())
    _check_executable(argv[0], cwd, env)
    return Spawn((setpriv, "--pdeathsig", "KILL", "--", *argv))


def _check_executable(program: str, cwd: Path, env: Mapping[str, str]) -> None:
    """Raise the ``OSError`` exec would raise for ``program``, as Popen does."""
    if os.sep in program:
        path = Path(program) if os.path.isabs(program) else cwd / program
        if not path.is_file():
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)
        if not os.access(path, os.X_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), program)
    elif shutil.which(program, path=env.get("PATH", os.defpath)) is None:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)


def classify(source: Source, text: str) -> int:
    """An SSIS message type for one output line."""
    if _PROGRESSISH.match(text):
        return MESSAGE_TYPE_PROGRESS
    if source == "stderr":
        return MESSAGE_TYPE_ERROR if _ERRORISH.match(text) else MESSAGE_TYPE_WARNING
    return MESSAGE_TYPE_ERROR if _ERRORISH.match(text) else MESSAGE_TYPE_INFO


def make_line(source: Source, text: str, message_type: int | None = None) -> Line:
    text = text[:MAX_LINE_CHARS]
    kind = classify(source, text) if message_type is None else message_type
    return Line(source, text, datetime.now(UTC), kind)


class PackageHandle(Protocol):
    """A started package, as the task loop sees it."""

    pid: int | None

    def next_lines(self, timeout: float, limit: int) -> list[Line]: ...
    def done(self) -> bool: ...
    def returncode(self) -> int | None: ...
    def stop(self, grace_s: float) -> None: ...
    def error_summary(self) -> str: ...


@dataclass
class _Output:
    """Lines from the reader threads; ``None`` marks one stream's end."""

    lines: queue.Queue[Line | None]
    stderr_tail: deque[str] = field(default_factory=lambda: deque(maxlen=20))
    open_streams: int = 0


class PackageProcess:
    """One package in its own process group, its stdout and stderr read line by line."""

    def __init__(
        self, launch: Launch, cwd: Path, *, owner: str = "", max_queued_lines: int = 2000
    ) -> None:
        self._launch = launch
        self._cwd = cwd
        self._owner = owner
        """Its mark (``marks.OWNER_ENV`` in its environment; "" = none)."""
        self._escaped_killed = False
        self._out = _Output(queue.Queue(maxsize=max_queued_lines))
        self._proc: subprocess.Popen[bytes] | None = None
        self._exited_at: float | None = None
        self._group_killed = False
        self.pid: int | None = None

    def start(self) -> int:
        """Start the process; raise ``OSError`` when it cannot start."""
        launch = self._launch
        env = child_environment(launch.env)
        if self._owner:
            env[marks.OWNER_ENV] = self._owner
        spawn = tied_to_worker(launch.argv, self._cwd, env)
        self._proc = subprocess.Popen(
            spawn.argv,
            cwd=self._cwd,
            env=env,
            stdin=subprocess.PIPE if launch.stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            # The thread that forks is the "parent" the signal watches: a task-<id>
            # thread, which lives as long as the worker (threads.DaemonThreads).
            preexec_fn=spawn.preexec,  # noqa: PLW1509  # no lock taken: see _die_with_parent
        )
        self.pid = self._proc.pid
        if launch.stdin is not None and self._proc.stdin is not None:
            with contextlib.suppress(BrokenPipeError):
                self._proc.stdin.write(launch.stdin)
            self._proc.stdin.close()
        for stream, source in ((self._proc.stdout, "stdout"), (self._proc.stderr, "stderr")):
            self._out.open_streams += 1
            threading.Thread(
                target=self._read,
                args=(stream, source),
                name=f"pkg-{self.pid}-{source}",
                daemon=True,
            ).start()
        return self.pid

    def _read(self, stream: IO[bytes], source: Source) -> None:
        try:
            for raw in iter(lambda: stream.readline(_READ_CHUNK), b""):
                text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                if source == "stderr":
                    self._out.stderr_tail.append(text)
                self._out.lines.put(make_line(source, text))
        finally:
            stream.close()  # a worker runs thousands of packages: no pipe may leak
            self._out.lines.put(None)

    def next_lines(self, timeout: float, limit: int) -> list[Line]:
        """Up to ``limit`` lines, waiting at most ``timeout`` for the first."""
        lines: list[Line] = []
        try:
            item = self._out.lines.get(timeout=timeout)
            while True:
                if item is None:
                    self._out.open_streams -= 1
                else:
                    lines.append(item)
                if len(lines) >= limit:
                    break
                item = self._out.lines.get_nowait()
        except queue.Empty:
            pass
        self._reap_stragglers()
        return lines

    def _reap_stragglers(self) -> None:
        """Once the package's main process has exited, what it left in its group is
        killed, so no orphan lives on and holds the pipes open; a second later, so is
        what carries its mark outside the group (a daemon that kept the pipes)."""
        if self._proc is None or self._proc.poll() is None or self._out.open_streams == 0:
            return
        now = time.monotonic()
        if self._exited_at is None:
            self._exited_at = now
        elif now - self._exited_at > 1.0:
            kill_group(self._proc.pid, signal.SIGKILL)
            if now - self._exited_at > 2.0 and not self._escaped_killed and self._owner:
                self._escaped_killed = True
                marks.send(self._marked(), signal.SIGKILL)

    def done(self) -> bool:
        ended = (
            self._proc is not None
            and self._proc.poll() is not None
            and self._out.open_streams == 0
            and self._out.lines.empty()
        )
        if ended and not self._group_killed:
            # What the package left in its group without holding its pipes (a daemon
            # that closed them) must not outlive the attempt: one killpg, usually ESRCH.
            assert self._proc is not None
            self._group_killed = True
            kill_group(self._proc.pid, signal.SIGKILL)
        return ended

    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def stop(self, grace_s: float) -> None:
        """SIGTERM to the whole group and to what carries the attempt's mark outside it,
        SIGKILL to what is left after ``grace_s``."""
        if self._proc is None:
            return
        pgid = self._proc.pid
        in_group = kill_group(pgid, signal.SIGTERM)
        escaped = self._marked()
        marks.send(escaped, signal.SIGTERM)
        if not in_group and not escaped:
            return
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            self._proc.poll()  # reap the leader, or it keeps the group alive as a zombie
            escaped = [p for p in escaped if marks.alive(p)]
            if not group_alive(pgid) and not escaped:
                return
            time.sleep(0.02)
        kill_group(pgid, signal.SIGKILL)
        marks.send(escaped, signal.SIGKILL)
        self._proc.poll()

    def _marked(self) -> list[psutil.Process]:
        """The live processes with this attempt's mark (its group's members among them)."""
        if not self._owner:
            return []
        return marks.marked(self._owner.__eq__)

    def error_summary(self) -> str:
        return summarise(self._out.stderr_tail)


def summarise(stderr_tail: Sequence[str], max_chars: int = 4000) -> str:
    """The last stderr lines, newest kept when they must be cut."""
    text = "\n".join(line for line in stderr_tail if line.strip())
    return text[-max_chars:]


def kill_group(pgid: int, sig: signal.Signals) -> bool:
    """Send ``sig`` to a process group; False when the group is already gone."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:  # a member changed user; the rest were still signalled
        return True
    return True


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
