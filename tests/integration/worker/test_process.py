"""PackageProcess with real processes: leftovers of a package that exited are killed."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import psutil

from consumers.worker.runner import Launch, PackageProcess

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
