"""Progress lines: the parser (good lines, out of range, junk), the rate limit (a flood
becomes a bounded number of reports, the drops counted), and a real attempt's package, as
a process and in-process, whose progress reaches the reporter before its finished."""

from __future__ import annotations

import json
import threading
import uuid
from concurrent.futures import Future
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from consumers.worker.attempt import TaskRun, prepare
from consumers.worker.outbox import Outgoing
from consumers.worker.progress import (
    PROGRESS_MARKER,
    BadProgress,
    Progress,
    ProgressThrottle,
    parse_progress,
)
from consumers.worker.projects import Project
from consumers.worker.runner import MESSAGE_TYPE_PROGRESS, classify
from consumers.worker.settings import WorkerSettings
from dispatcher.errors import BrokerUnavailable
from dispatcher.metrics import WORKER
from dispatcher.testing import make_assign
from schemas.messages import (
    PROGRESS_MESSAGE_MAX_CHARS,
    TaskFinished,
    TaskLog,
    TaskProgress,
)
from schemas.project import ProjectManifest

M = PROGRESS_MARKER


def dropped(reason: str) -> float:
    value = WORKER.get_sample_value("scaleout_worker_progress_dropped_total", {"reason": reason})
    return value or 0.0


# -- the line format --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (f"{M} 42.5 Loading rows", Progress(42.5, "Loading rows")),
        (f"{M} 7%", Progress(7.0, "")),
        (f"{M} 0", Progress(0.0, "")),
        (f"{M} 100 done", Progress(100.0, "done")),
        (f"  {M}\t12\tmany   words  here ", Progress(12.0, "many   words  here")),
        (f"{M} - only a message", Progress(None, "only a message")),
        (f"{M}55 glued", Progress(55.0, "glued")),
    ],
)
def test_good_lines_parse(line: str, expected: Progress) -> None:
    assert parse_progress(line) == expected
    assert classify("stdout", line) == MESSAGE_TYPE_PROGRESS


@pytest.mark.parametrize(
    "line",
    ["hello", "progress 50", "Progress: reading sales.csv", f"echo {M} 5", "##scaleout[info] 5"],
)
def test_ordinary_lines_are_not_progress(line: str) -> None:
    assert parse_progress(line) is None


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (f"{M} 150 too far", "out_of_range"),
        (f"{M} -3", "out_of_range"),
        (f"{M} 100.01", "out_of_range"),
        (f"{M} inf", "out_of_range"),
        (f"{M} abc", "invalid"),
        (f"{M} nan", "invalid"),
        (f"{M} 4,5", "invalid"),
        (f"{M}", "invalid"),
        (f"{M} -", "invalid"),
        (f"{M}x", "invalid"),
    ],
)
def test_bad_lines_are_refused_with_a_reason(line: str, reason: str) -> None:
    with pytest.raises(BadProgress) as info:
        parse_progress(line)
    assert info.value.reason == reason


def test_a_long_message_is_cut() -> None:
    progress = parse_progress(f"{M} 1 {'x' * 9000}")

    assert progress == Progress(1.0, "x" * PROGRESS_MESSAGE_MAX_CHARS)


@given(st.text(max_size=60))
def test_any_text_after_the_marker_is_a_valid_report_or_refused(tail: str) -> None:
    """Whatever a package prints, the parser never yields an invalid TaskProgress."""
    try:
        progress = parse_progress(M + tail)
    except BadProgress:
        return
    assert progress is not None
    TaskProgress(
        task_id=uuid.uuid4(),
        attempt=1,
        execution_id=1,
        worker_id="w1",
        percent=progress.percent,
        message=progress.message,
    )


# -- the rate limit ---------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_first_value_goes_at_once_and_the_newest_waiting_one_wins() -> None:
    clock = Clock()
    throttle = ProgressThrottle(1.0, clock)
    before = dropped("superseded")

    first = throttle.offer(Progress(1, "a"))
    clock.now += 0.2
    held = [throttle.offer(Progress(2, "b")), throttle.offer(Progress(3, "c"))]
    early = throttle.due()
    clock.now += 0.8
    later = throttle.due()

    assert first == Progress(1, "a")
    assert held == [None, None]
    assert early is None
    assert later == Progress(3, "c")
    assert throttle.due() is None
    assert dropped("superseded") - before == 1


def test_final_releases_the_waiting_value_whatever_the_time() -> None:
    clock = Clock()
    throttle = ProgressThrottle(1.0, clock)
    throttle.offer(Progress(10, ""))
    throttle.offer(Progress(99, "last"))

    assert throttle.final() == Progress(99, "last")
    assert throttle.final() is None


def test_a_flood_becomes_one_report_per_interval() -> None:
    """10,000 values over 5 s (simulated): 6 sent (one per second, the first at once),
    the last one at the end, every other value counted as superseded."""
    clock = Clock()
    throttle = ProgressThrottle(1.0, clock)
    before = dropped("superseded")
    sent = []

    for i in range(10_000):
        clock.now += 5.0 / 10_000
        released = throttle.offer(Progress(i / 100, f"row {i}"))
        if released is not None:
            sent.append(released)
    last = throttle.final()

    assert 5 <= len(sent) <= 6
    assert last == Progress(99.99, "row 9999")
    assert dropped("superseded") - before == 10_000 - len(sent) - 1


# -- a real attempt ---------------------------------------------------------------------


class RecordingReporter:
    """Confirms every report and keeps them in order; ``refuse`` fails non-durable ones."""

    def __init__(self, *, refuse: bool = False) -> None:
        self.messages: list[BaseModel] = []
        self.refuse = refuse
        self.lock = threading.Lock()

    def submit(self, item: Outgoing, *, durable: bool = True) -> Future[bool]:
        future: Future[bool] = Future()
        with self.lock:
            self.messages.append(item.message)
        if self.refuse and not durable:
            future.set_exception(BrokerUnavailable("broker unavailable; report cached"))
        else:
            future.set_result(True)
        return future

    def of(self, kind: type[BaseModel]) -> list[BaseModel]:
        with self.lock:
            return [m for m in self.messages if isinstance(m, kind)]


FLOOD = f"""\
import sys
lines = [f"{M} {{i / 100:.2f}} row {{i}}" for i in range(10000)]
lines += ["{M} 150 oops", "{M} abc", "{M} -3"]
lines.append("{M} 100 all rows loaded")
sys.stdout.write("\\n".join(lines) + "\\n")
"""

CALLABLE = f"""\
def main(parameters):
    for step in (25, 50, 75):
        print("{M}", step, "step", step)
    print("ordinary line")
    return 0
"""


def project(root: Path) -> Project:
    root.mkdir()
    (root / "flood.py").write_text(FLOOD)
    (root / "steps.py").write_text(CALLABLE)
    manifest = {
        "format": 1,
        "name": "Progress",
        "packages": [
            {"name": "Flood", "entry": {"argv": ["{python}", "flood.py"]}},
            {"name": "Steps", "entry": {"callable": "steps:main"}},
        ],
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    return Project("b" * 64, root, ProjectManifest.model_validate(manifest))


def run(tmp_path: Path, package: str, reporter: RecordingReporter, **settings: object) -> None:
    config = WorkerSettings.model_validate(
        {"worker_id": "w1", "tasks_root_folder": tmp_path / "tasks", **settings}
    )
    assign = make_assign(project="Progress", package=package, project_hash="b" * 64)
    prepared = prepare(config, assign, project(tmp_path / "project"))
    ended = threading.Event()
    task = TaskRun(
        config,
        assign,
        prepared,
        reporter,  # type: ignore[arg-type]  # a Reporter's submit, recorded
        on_end=lambda _key: ended.set(),
    )
    task.start()
    assert ended.wait(60), "the attempt did not end"


def test_a_flooding_package_sends_a_bounded_number_of_valid_reports(tmp_path: Path) -> None:
    """10,003 progress lines: a few task.progress (one per interval at most), the last one
    (100 %) before task.finished; the three bad lines are counted; every line is logged."""
    reporter = RecordingReporter()
    invalid, out_of_range = dropped("invalid"), dropped("out_of_range")

    run(tmp_path, "Flood", reporter, progress_interval_s=0.5)

    messages = reporter.messages
    reports = reporter.of(TaskProgress)
    assert isinstance(messages[-1], TaskFinished)
    assert messages[-1].outcome.value == "succeeded"
    assert 1 <= len(reports) <= 10
    last = reports[-1]
    assert isinstance(last, TaskProgress)
    assert (last.percent, last.message) == (100.0, "all rows loaded")
    assert messages.index(last) < len(messages) - 1
    assert dropped("invalid") - invalid == 1
    assert dropped("out_of_range") - out_of_range == 2
    entries = [e for m in messages if isinstance(m, TaskLog | TaskFinished) for e in m.entries]
    progress_lines = [e for e in entries if e.message.startswith(M)]
    assert len(progress_lines) == 10_004
    assert {e.message_type for e in progress_lines} == {MESSAGE_TYPE_PROGRESS}


def test_an_inprocess_callable_reports_progress_from_its_prints(tmp_path: Path) -> None:
    """In runner_mode inprocess, what the callable's thread prints is its output: progress
    lines become reports, other lines log lines."""
    reporter = RecordingReporter()

    run(tmp_path, "Steps", reporter, runner_mode="inprocess", progress_interval_s=60)

    reports = [(r.percent, r.message) for r in reporter.of(TaskProgress)]  # type: ignore[attr-defined]
    entries = [
        e.message
        for m in reporter.messages
        if isinstance(m, TaskLog | TaskFinished)
        for e in m.entries
    ]
    assert reports == [
        (25.0, "step 25"),
        (75.0, "step 75"),
    ]  # the first at once, the last at the end
    assert "ordinary line" in entries


def test_progress_the_broker_refuses_is_dropped_and_counted(tmp_path: Path) -> None:
    """A task.progress is not durable: when it cannot be published it is counted, not cached,
    and the attempt still ends normally."""
    reporter = RecordingReporter(refuse=True)
    before = dropped("unsent")

    run(tmp_path, "Steps", reporter, runner_mode="inprocess", progress_interval_s=60)

    assert len(reporter.of(TaskProgress)) == 2
    assert dropped("unsent") - before == 2
    assert isinstance(reporter.messages[-1], TaskFinished)
