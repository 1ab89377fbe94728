"""PackageProcess with real processes: leftovers of a package that exited are killed, a
package dies with its worker, and a restarted worker stops what its previous life left."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest

from consumers.worker import marks, orphans, runner
from consumers.worker.runner import Launch, Line, PackageProcess
from dispatcher.metrics import WORKER
from tests.fixtures.polling import wait_for

REPO = Path(__file__).resolve().parents[3]

LEAVES_A_CHILD = """
import subprocess, sys
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
print("child", child.pid, flush=True)
"""


def test_a_child_left_behind_is_killed_so_the_package_ends(tmp_path: Path) -> None:
    """A package that exits while its child still holds its stdout ends anyway: the child
    is killed and the output reading stops."""
    process = PackageProcess(Launch(argv=(sys.executable, "-c", LEAVES_A_CHILD), env={}), tmp_path)
    process.start()
    lines = []
    deadline = time.monotonic() + 30
    while not process.done() and time.monotonic() < deadline:
        lines.extend(process.next_lines(timeout=0.1, limit=100))
    assert process.done()
    assert process.returncode() == 0
    child = int(next(line.text.split()[1] for line in lines if line.text.startswith("child")))
    while _alive(child) and time.monotonic() < deadline:  # SIGKILL is not instant
        time.sleep(0.02)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# -- a package dies with its worker (issue 14) ------------------------------------------

FAKE_WORKER = """
import sys, threading, time
from pathlib import Path
from consumers.worker import runner
if sys.argv[2] == "preexec":
    runner.SETPRIV = None
launch = runner.Launch(argv=(sys.executable, "-c", sys.argv[3]), env={})
process = runner.PackageProcess(launch, Path(sys.argv[1]), owner="fake:" + sys.argv[1])

def run():  # from a thread that lives on, as the worker's task threads do
    process.start()
    print(process.pid, flush=True)
    while True:
        process.next_lines(timeout=0.5, limit=100)

threading.Thread(target=run, daemon=True).start()
time.sleep(600)
"""
SLEEPER = "import time; time.sleep(600)"


@pytest.mark.parametrize("how", ["setpriv", "preexec"])
def test_a_package_dies_with_its_worker(tmp_path: Path, how: str) -> None:
    """kill -9 of the process that started a package (from one of its threads): the
    package gets SIGKILL from the kernel at once, with setpriv and without it."""
    if how == "setpriv":
        assert runner.SETPRIV is not None, (
            "setpriv (util-linux) is missing: apt-get install util-linux"
        )
    worker = subprocess.Popen(
        [sys.executable, "-c", FAKE_WORKER, str(tmp_path), how, SLEEPER],
        cwd=REPO,
        stdout=subprocess.PIPE,
    )
    try:
        assert worker.stdout is not None
        package = int(worker.stdout.readline())
        # setpriv sets the signal, then execs the package in the same pid: kill once that
        # has happened. A kill before it is the window setpriv leaves (the restart sweep's
        # case, tested below), not this test's subject.
        wait_for(lambda: _program(package) == [sys.executable, "-c", SLEEPER], 10, "the exec")
    finally:
        worker.kill()
        worker.wait()
        assert worker.stdout is not None
        worker.stdout.close()
    wait_for(lambda: not _alive(package), 10, "the package to die with its worker")


def _program(pid: int) -> list[str]:
    try:
        return psutil.Process(pid).cmdline()
    except psutil.Error:
        return []


def test_a_package_whose_worker_died_before_prctl_does_not_run(tmp_path: Path) -> None:
    """The preexec path's race: the worker died between fork and prctl, so the parent
    is no longer the worker; the package kills itself before exec."""
    pid_of_someone_else = 1
    proc = subprocess.Popen(
        ["sleep", "600"],
        preexec_fn=functools.partial(runner._die_with_parent, pid_of_someone_else),  # noqa: PLW1509
    )
    assert proc.wait(timeout=10) == -signal.SIGKILL


def test_a_missing_program_is_refused_before_setpriv_runs(tmp_path: Path) -> None:
    """Under setpriv the package's program is looked up first: missing or not executable
    is an OSError at start, as without setpriv, not a package that exits 127."""
    script = tmp_path / "tool.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    for argv, error in (
        (("/nonexistent/scaleout-tool",), FileNotFoundError),
        (("./tool.sh",), PermissionError),
        (("scaleout-no-such-program",), FileNotFoundError),
    ):
        with pytest.raises(error):
            PackageProcess(Launch(argv=argv, env={}), tmp_path).start()
    script.chmod(0o755)
    process = PackageProcess(Launch(argv=("./tool.sh",), env={}), tmp_path)
    process.start()
    lines = _all_lines(process)
    assert [line.text for line in lines] == ["hi"]
    assert process.returncode() == 0


DAEMON_LEFT_BEHIND = """
import os, subprocess, sys
child = subprocess.Popen(
    [sys.executable, "-c", "import time; time.sleep(600)"],
    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
)
print("child", child.pid, flush=True)
"""


def test_a_child_that_let_go_of_the_pipes_is_killed_when_the_package_ends(
    tmp_path: Path,
) -> None:
    """A child that holds none of the package's pipes does not keep the package from
    ending; it is killed (its group is) as soon as the package has ended."""
    process = PackageProcess(
        Launch(argv=(sys.executable, "-c", DAEMON_LEFT_BEHIND), env={}), tmp_path
    )
    process.start()
    lines = _all_lines(process)
    child = int(next(line.text.split()[1] for line in lines if line.text.startswith("child")))
    wait_for(lambda: not _alive(child), 10, "the child left behind to be killed")


def _all_lines(process: PackageProcess) -> list[Line]:
    lines: list[Line] = []
    deadline = time.monotonic() + 30
    while not process.done() and time.monotonic() < deadline:
        lines.extend(process.next_lines(timeout=0.1, limit=100))
    assert process.done()
    return lines


DAEMONIZES = """
import os, sys, time
if os.fork() == 0:
    os.setsid()  # a session of its own: the package's killpg cannot reach it
    if os.fork() == 0:
        print("daemon", os.getpid(), flush=True)
        time.sleep(600)  # keeps the package's stdout open
    os._exit(0)
os.wait()
time.sleep(float(sys.argv[1]))
"""


def _daemonizing(tmp_path: Path, seconds: float) -> PackageProcess:
    mark = marks.attempt_mark(f"w1:{tmp_path}", uuid.uuid4(), 1)
    launch = Launch(argv=(sys.executable, "-c", DAEMONIZES, str(seconds)), env={})
    process = PackageProcess(launch, tmp_path, owner=mark)
    process.start()
    return process


def _daemon_pid(process: PackageProcess) -> int:
    lines = wait_for(lambda: process.next_lines(timeout=0.2, limit=10), 30, "the daemon")
    return int(lines[0].text.split()[1])


def test_a_stop_reaches_a_daemon_that_left_the_package_group(tmp_path: Path) -> None:
    """A cancel or a lost lease stops the package and a daemon it double-forked into a
    session of its own (found by the attempt's mark), so neither runs on next to a retry."""
    process = _daemonizing(tmp_path, 600)
    daemon = _daemon_pid(process)
    assert os.getpgid(daemon) != process.pid
    process.stop(grace_s=2.0)
    wait_for(lambda: not _alive(daemon), 10, "the daemon to be stopped")
    _all_lines(process)
    assert process.returncode() == -signal.SIGTERM


def test_a_daemon_holding_the_pipes_does_not_keep_an_ended_package_running(
    tmp_path: Path,
) -> None:
    """The package exits while its double-forked daemon keeps its stdout open: the
    package still ends (a few seconds later) and the daemon is killed."""
    process = _daemonizing(tmp_path, 0)
    daemon = _daemon_pid(process)
    _all_lines(process)
    assert process.returncode() == 0
    wait_for(lambda: not _alive(daemon), 10, "the daemon to be killed")


# -- what a previous life left -----------------------------------------------------------

ESCAPED = """
import os, sys, time
if os.fork():
    os._exit(0)
os.setsid()  # double-forked into a session of its own: no group or parent ties it
if os.fork():
    os._exit(0)
print(os.getpid(), flush=True)
devnull = os.open(os.devnull, os.O_WRONLY)
os.dup2(devnull, 1)  # let go of the pipe, so whoever started it sees its end
if sys.argv[1] == "stubborn":
    import signal
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
time.sleep(600)
"""


def _escaped(tmp_path: Path, owner: str, kind: str = "polite") -> int:
    """A process that carries ``owner`` in its environment but is nobody's child here."""
    env = {**os.environ, marks.OWNER_ENV: owner}
    out = subprocess.run(
        [sys.executable, "-c", ESCAPED, kind],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        check=True,
        timeout=30,
    )
    pid = int(out.stdout)
    wait_for(lambda: _alive(pid), 10)
    return pid


def test_a_restarted_worker_stops_what_its_previous_life_left(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Processes marked with this worker's owner (one that ignores SIGTERM) are stopped,
    logged worker.orphan_stopped and counted; one marked for the same worker id in
    another folder, and one unmarked, are left alone."""
    mine = f"w1:{tmp_path / 'tasks'}"
    polite = _escaped(tmp_path, f"{mine}#{uuid.uuid4()}/1")
    stubborn = _escaped(tmp_path, f"{mine}#{uuid.uuid4()}/2", "stubborn")
    others = _escaped(tmp_path, f"w1:{tmp_path / 'elsewhere'}#{uuid.uuid4()}/1")
    try:
        before = _counted()
        with caplog.at_level(logging.WARNING):
            assert orphans.stop_orphans(mine, grace_s=0.5) == 2
        assert not _alive(polite)
        assert not _alive(stubborn)
        assert _alive(others)
        assert _counted() == before + 2
        events = [r for r in caplog.records if r.getMessage().startswith("worker.orphan_stopped")]
        assert {r.__dict__["pid"] for r in events} == {polite, stubborn}
        assert orphans.stop_orphans(mine, grace_s=0.5) == 0  # nothing left to find
    finally:
        for pid in (polite, stubborn, others):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _counted() -> float:
    return WORKER.get_sample_value("scaleout_worker_orphans_stopped_total") or 0.0
