"""The worker's settings (``scaleout worker``): SSIS's WorkerSettings.config.

Each field records its SSIS name, so a TOML file may say ``AgentHeartbeatInterval =
"00:01:00"`` as the product's config file does, or ``agent_heartbeat_interval_s = 60``.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, field_validator

from dispatcher.settings import BrokerSettings, ScaleoutSettings, parse_timespan, ssis
from schemas.messages import WorkerId

_MISSPELT = {
    "LeaseInternval": "lease_interval_s",
    "HeartbeatErrorTollerance": "heartbeat_error_tolerance_s",
}


def _state_dir() -> Path:
    """Where the worker keeps its folders by default (SSIS: ...\\AppData\\Local\\SSIS)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "scaleout"


class WorkerSettings(ScaleoutSettings):
    """The Scale Out Worker; SSIS's WorkerSettings.config."""

    toml_section: ClassVar[str] = "worker"
    toml_aliases: ClassVar[dict[str, str]] = _MISSPELT
    """SSIS's docs spell two settings wrongly; a config copied from them still loads."""

    worker_id: WorkerId = Field(
        ..., **ssis("AgentId", "this worker's id: its RabbitMQ user and queue suffix")
    )
    display_name: str = Field(
        default_factory=socket.gethostname, **ssis("DisplayName", "name shown to operators")
    )
    description: str = Field("", **ssis("Description", "free text about this worker"))
    broker: BrokerSettings = BrokerSettings()
    agent_heartbeat_interval_s: float = Field(
        60.0, gt=0, **ssis("AgentHeartbeatInterval", "heartbeat while no task runs")
    )
    task_heartbeat_interval_s: float = Field(
        10.0, gt=0, **ssis("TaskHeartbeatInterval", "heartbeat while tasks run (renews leases)")
    )
    heartbeat_error_tolerance_s: float = Field(
        600.0,
        gt=0,
        **ssis("HeartbeatErrorTolerance", "kill running packages after heartbeats fail this long"),
    )
    task_request_max_cpu: float = Field(
        70.0, gt=0, le=100, **ssis("TaskRequestMaxCPU", "take no task while CPU % is above")
    )
    task_request_min_memory_mb: float = Field(
        100.0, ge=0, **ssis("TaskRequestMinMemory", "take no task while free MB is below")
    )
    max_task_count: int = Field(10, ge=1, **ssis("MaxTaskCount", "packages run at once"))
    lease_interval_s: float = Field(
        60.0, gt=0, le=86400, **ssis("LeaseInterval", "lease the master grants per heartbeat")
    )
    tasks_root_folder: Path = Field(
        default_factory=lambda: _state_dir() / "tasks",
        **ssis("TasksRootFolder", "one folder per task attempt: <task_id>/<attempt>"),
    )
    task_log_level: int = Field(
        126, ge=0, le=127, **ssis("TaskLogLevel", "bit flags of the log lines sent")
    )
    execution_log_cache_folder: Path = Field(
        default_factory=lambda: _state_dir() / "elogcache",
        **ssis("ExecutionLogCacheFolder", "unsent reports wait here while the broker is down"),
    )
    execution_log_max_cached: int = Field(
        10000, ge=1, description="reports kept on disk while unsent; the oldest are dropped"
    )
    shutdown_grace_s: float = Field(
        30.0, ge=0, description="on SIGTERM, let running packages finish this long"
    )
    kill_grace_s: float = Field(
        5.0, ge=0, description="between SIGTERM and SIGKILL when a package is stopped"
    )
    project_fetch_timeout_s: float = Field(
        60.0, gt=0, description="wait this long for the master to send a project archive"
    )
    project_cache_folder: Path = Field(
        default_factory=lambda: _state_dir() / "projects",
        description="project archives cached by content hash",
    )
    runner_mode: Literal["subprocess", "inprocess"] = Field(
        "subprocess",
        description=(
            "subprocess: every package in its own process group. inprocess: callable "
            "packages run in a thread of the worker (benchmarks only; cannot be killed)"
        ),
    )
    metrics_port: int = Field(
        0, ge=0, description="Prometheus /metrics port of this worker; 0 = off (compose: 9541)"
    )
    metrics_host: str = Field("127.0.0.1", description="address the metrics server binds")
    master_user_id: str = Field(
        "scaleout-master",
        min_length=1,
        description="RabbitMQ user of the master; task and cancel messages from others are refused",
    )

    @field_validator(
        "agent_heartbeat_interval_s",
        "task_heartbeat_interval_s",
        "heartbeat_error_tolerance_s",
        "lease_interval_s",
        "shutdown_grace_s",
        "kill_grace_s",
        "project_fetch_timeout_s",
        mode="before",
    )
    @classmethod
    def _timespan(cls, value: object) -> object:
        return parse_timespan(value)
