"""The README's "typical session", run exactly as the README writes it, on the local
broker as guest: the execution it creates succeeds.

The block is read from the README, not copied here, so the README cannot drift from what
works. Only the surroundings are the test's: an empty folder (with ``examples/`` linked
in), a clean ``SCALEOUT_*`` environment, a private state folder for the worker, and a
trap that stops the session's background services.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.acceptance.conftest import REPO, broker_is_up

SESSION = re.compile(r"A typical session:\n\n```bash\n(?P<script>.*?)```", re.S)


def readme_session() -> str:
    found = SESSION.search((REPO / "README.md").read_text())
    assert found, "the README has no 'A typical session:' bash block"
    return found["script"]


def _purge_worker_queues(worker_id: str) -> None:
    """A fresh machine's broker holds nothing for w1; this one may, from other runs."""
    for queue in (f"scaleout.worker.{worker_id}", f"scaleout.control.{worker_id}"):
        subprocess.run(
            ["rabbitmqctl", "-q", "purge_queue", queue],
            capture_output=True,
            timeout=60,
            check=False,  # a queue that does not exist yet holds nothing either
        )


def test_the_readme_session_runs_as_written(tmp_path: Path) -> None:
    broker_is_up()
    script = readme_session()
    assert "scaleout worker --id w1 &" in script, "the session must start its worker"
    _purge_worker_queues("w1")
    (tmp_path / "examples").symlink_to(REPO / "examples")
    bin_dir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCALEOUT_")}
    env.update(
        PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
        HOME=str(tmp_path / "home"),
        XDG_STATE_HOME=str(tmp_path / "state"),
    )
    wrapped = f"set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null; wait' EXIT\n{script}"

    done = subprocess.run(
        ["bash", "-c", wrapped],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    assert done.returncode == 0, f"{done.stdout}\n{done.stderr[-4000:]}"
    assert "succeeded" in done.stdout
