"""The worker runs real packages and its reports reach the master side intact."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

from schemas.messages import TaskFinished, TaskLog, TaskOutcome, TaskStarted
from tests.fixtures.worker import SALES_ETL, ScriptedMaster, WorkerProcess, write_testkit

StartWorker = Callable[..., AbstractContextManager[WorkerProcess]]


def test_logs_and_outcome_reach_the_master_in_order(
    master: ScriptedMaster, start_worker: StartWorker
) -> None:
    """LoadSales runs to exit 0: started, then its log lines in seq order, then finished."""
    project = master.deploy(SALES_ETL)
    with start_worker() as worker:
        task = master.assign(
            project, "LoadSales", {"ApiToken": "tok-9f8e7d"}, sensitive=["ApiToken"]
        )
        finished = master.finished(task, timeout_s=60)
        assert worker.stop() == 0

    assert finished.outcome is TaskOutcome.SUCCEEDED, finished.error
    assert finished.exit_code == 0
    assert finished.duration_s > 0
    kinds = [type(m) for _, m in master.about(task)]
    assert kinds[0] is TaskStarted
    assert kinds[-1] is TaskFinished
    assert set(kinds[1:-1]) <= {TaskLog}  # the last lines may all ride in task.finished
    entries = master.log_entries(task)
    assert [e.seq for e in entries] == list(range(len(entries)))
    text = master.log_text(task)
    assert text.index("read 120 sales rows") < text.index("wrote 4 rows")
    assert "api token given: True" in text
    assert "tok-9f8e7d" not in text
    assert "tok-9f8e7d" not in worker.log()
    assert master.received.user_ids == {"w1"}
    db = worker.folder / "tasks" / str(task.task_id) / "1" / "sales_summary.sqlite3"
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT region, sales FROM sales_by_region ORDER BY region").fetchall()
    assert [r[0] for r in rows] == ["East", "North", "South", "West"]
    assert sum(r[1] for r in rows) == 120


def test_a_failing_package_reports_its_exit_code_and_stderr(
    master: ScriptedMaster, start_worker: StartWorker
) -> None:
    """FailOnPurpose makes LoadSales exit 3; the master gets failed, 3 and the stderr line."""
    project = master.deploy(SALES_ETL)
    with start_worker():
        task = master.assign(project, "LoadSales", {"FailOnPurpose": True})
        finished = master.finished(task, timeout_s=60)
    assert finished.outcome is TaskOutcome.FAILED
    assert finished.exit_code == 3
    assert "FailOnPurpose is set" in finished.error


def test_a_callable_package_runs(master: ScriptedMaster, start_worker: StartWorker) -> None:
    """Summarise (``etl.summarise:main``) gets its parameters and its prints are logged."""
    project = master.deploy(SALES_ETL)
    with start_worker():
        task = master.assign(project, "Summarise", {"Region": "West"})
        finished = master.finished(task, timeout_s=60)
    assert finished.outcome is TaskOutcome.SUCCEEDED, finished.error
    text = master.log_text(task)
    assert "West: 30 sales" in text
    assert "North" not in text


def test_worker_keeps_no_catalog_driver(tmp_path: Path) -> None:
    """Importing the worker loads neither SQLAlchemy nor pyodbc."""
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    code = (
        "import consumers.worker.service, consumers.worker.__main__, sys; "
        "bad = [m for m in ('sqlalchemy', 'pyodbc') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
        env={"PYTHONPATH": str(Path(__file__).resolve().parents[3])},
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_inprocess_mode_runs_callables_in_the_worker(
    master: ScriptedMaster, start_worker: StartWorker, tmp_path: Path
) -> None:
    """With runner_mode inprocess, a callable package runs in a worker thread and succeeds;
    a command package still runs as a process."""
    project = master.deploy(write_testkit(tmp_path / "kit"))
    with start_worker(runner_mode="inprocess"):
        call = master.assign(project, "Sum")
        command = master.assign(project, "Echo", {"Word": "still"})
        called, commanded = master.finished(call), master.finished(command)
    assert called.outcome is TaskOutcome.SUCCEEDED, called.error
    assert called.exit_code == 0
    assert "pid None" in master.log_text(call)
    assert commanded.outcome is TaskOutcome.SUCCEEDED, commanded.error
    assert "line 0 still" in master.log_text(command)
