"""Worker settings: SSIS names and defaults, TimeSpan strings, the TOML [worker] table."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from consumers.worker.settings import WorkerSettings


def test_defaults_are_ssis_defaults() -> None:
    """Unset settings take WorkerSettings.config's defaults."""
    s = WorkerSettings(worker_id="w1")
    assert s.agent_heartbeat_interval_s == 60
    assert s.task_heartbeat_interval_s == 10
    assert s.heartbeat_error_tolerance_s == 600
    assert s.task_request_max_cpu == 70
    assert s.task_request_min_memory_mb == 100
    assert s.max_task_count == 10
    assert s.lease_interval_s == 60
    assert s.task_log_level == 126
    assert s.runner_mode == "subprocess"
    assert s.master_user_id == "auto"


def test_the_master_user_follows_the_broker_url_as_the_master_does() -> None:
    """auto: the master's certificate user on amqps://; on a plain loopback dev broker,
    where everyone logs in as one user, the worker's own login. An explicit value wins."""
    tls = WorkerSettings(worker_id="w1", broker={"url": "amqps://mq.example/scaleout"})
    plain = WorkerSettings(worker_id="w1")
    pinned = WorkerSettings(worker_id="w1", master_user_id="ops-master")

    assert tls.master_user("w1") == "scaleout-master"
    assert plain.master_user("guest") == "guest"
    assert pinned.master_user("guest") == "ops-master"


def test_a_toml_file_may_use_ssis_names_and_timespans(tmp_path: Path) -> None:
    """[worker] with SSIS names and d.hh:mm:ss values loads into our fields."""
    path = tmp_path / "scaleout.toml"
    path.write_text(
        "[worker]\n"
        'AgentId = "worker-7"\n'
        'AgentHeartbeatInterval = "00:00:30"\n'
        'TaskHeartbeatInterval = "00:00:02.5"\n'
        'HeartbeatErrorTolerance = "1.00:00:00"\n'
        "MaxTaskCount = 4\n"
        'TasksRootFolder = "/srv/tasks"\n'
        "[worker.broker]\n"
        'url = "amqps://broker.example:5671/%2F"\n'
    )
    s = WorkerSettings.load(path)
    assert s.worker_id == "worker-7"
    assert s.agent_heartbeat_interval_s == 30
    assert s.task_heartbeat_interval_s == 2.5
    assert s.heartbeat_error_tolerance_s == 86400
    assert s.max_task_count == 4
    assert s.tasks_root_folder == Path("/srv/tasks")
    assert s.broker.uses_tls


def test_the_misspellings_of_ssis_docs_are_accepted(tmp_path: Path) -> None:
    """LeaseInternval and HeartbeatErrorTollerance, as SSIS's docs spell them, still load."""
    path = tmp_path / "scaleout.toml"
    path.write_text(
        '[worker]\nworker_id = "w1"\nLeaseInternval = "00:02:00"\n'
        'HeartbeatErrorTollerance = "00:05:00"\n'
    )
    s = WorkerSettings.load(path)
    assert s.lease_interval_s == 120
    assert s.heartbeat_error_tolerance_s == 300


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SCALEOUT_* variables win over the TOML file."""
    path = tmp_path / "scaleout.toml"
    path.write_text('[worker]\nworker_id = "w1"\nMaxTaskCount = 4\n')
    monkeypatch.setenv("SCALEOUT_MAX_TASK_COUNT", "2")
    assert WorkerSettings.load(path).max_task_count == 2


def test_a_bad_worker_id_or_cpu_bound_is_refused() -> None:
    """A worker id that cannot be a queue name, or a CPU bound over 100, is refused."""
    with pytest.raises(ValidationError):
        WorkerSettings(worker_id="no spaces/allowed")
    with pytest.raises(ValidationError):
        WorkerSettings(worker_id="w1", task_request_max_cpu=150)
