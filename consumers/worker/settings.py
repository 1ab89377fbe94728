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
from schemas.messages import MAX_TASK_BACKLOG, WorkerId

DEFAULT_MASTER_USER = "scaleout-master"
"""The master's RabbitMQ user (its certificate's CN) in a TLS deployment."""

_MISSPELT = {
    "LeaseInternval": "lease_interval_s",
    "HeartbeatErrorTollerance": "heartbeat_error_tolerance_s",
}
_DISK_NAMES = {
    "TaskRequestMinDiskSpace": "task_request_min_disk_mb",
    "TasksRootFolderRetention": "tasks_root_folder_retention_s",
    "TasksRootFolderMaxSize": "tasks_root_folder_max_size_mb",
    "ExecutionLogCacheRetention": "execution_log_cache_retention_s",
    "ExecutionLogCacheMaxSize": "execution_log_cache_max_size_mb",
    "ProjectCacheRetention": "project_cache_retention_s",
    "ProjectCacheMaxSize": "project_cache_max_size_mb",
    "RetentionSweepInterval": "retention_sweep_interval_s",
}
"""PascalCase file keys for the disk settings, in SSIS's style. SSIS has no such settings,
so they are aliases, not SSIS names: the README's SSIS column shows none for them."""
_OUR_NAMES = {"TaskBacklog": "task_backlog"}
"""PascalCase file keys of our other settings that SSIS lacks; aliases too."""
_WEEK_S = 7 * 86400.0


def _state_dir() -> Path:
    """Where the worker keeps its folders by default (SSIS: ...\\AppData\\Local\\SSIS)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "scaleout"


class WorkerSettings(ScaleoutSettings):
    """The Scale Out Worker; SSIS's WorkerSettings.config."""

    toml_section: ClassVar[str] = "worker"
    toml_aliases: ClassVar[dict[str, str]] = {**_MISSPELT, **_DISK_NAMES, **_OUR_NAMES}
    """SSIS's docs spell two settings wrongly; a config copied from them still loads. The
    disk settings, which SSIS lacks, take PascalCase keys as well."""

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
        **ssis(
            "HeartbeatErrorTolerance",
            "kill running packages after heartbeats fail this long (an outer bound: a lease "
            "that passes unrenewed stops its package sooner)",
        ),
    )
    task_request_max_cpu: float = Field(
        70.0, gt=0, le=100, **ssis("TaskRequestMaxCPU", "take no task while CPU % is above")
    )
    task_request_min_memory_mb: float = Field(
        100.0, ge=0, **ssis("TaskRequestMinMemory", "take no task while free MB is below")
    )
    task_request_min_disk_mb: float = Field(
        500.0,
        ge=0,
        description=(
            "take no task while the filesystem of TasksRootFolder has fewer free MB; 0 = off "
            "(file key TaskRequestMinDiskSpace; not an SSIS setting)"
        ),
    )
    max_task_count: int = Field(10, ge=1, **ssis("MaxTaskCount", "packages run at once"))
    task_backlog: int = Field(
        0,
        ge=0,
        le=MAX_TASK_BACKLOG,
        description=(
            "assignments taken beyond MaxTaskCount and held until a slot frees, so a short "
            "package's slot turns over without a round trip to the master; MaxTaskCount "
            "still bounds what runs. For short packages: an assignment held behind long ones "
            "waits, and is handed back by the master's expiry timer when its dispatch lease "
            "ends first (file key TaskBacklog; not an SSIS setting)"
        ),
    )
    lease_interval_s: float = Field(
        60.0,
        gt=0,
        le=86400,
        **ssis(
            "LeaseInterval",
            "lease the master grants per heartbeat; a package whose lease passes unrenewed "
            "(+ TaskHeartbeatInterval) is stopped",
        ),
    )
    tasks_root_folder: Path = Field(
        default_factory=lambda: _state_dir() / "tasks",
        **ssis("TasksRootFolder", "one folder per task attempt: <task_id>/<attempt>"),
    )
    tasks_root_folder_retention_s: float = Field(
        _WEEK_S,
        gt=0,
        description=(
            "an attempt's folder and log are removed this long after the attempt last wrote "
            "to them (file key TasksRootFolderRetention)"
        ),
    )
    tasks_root_folder_max_size_mb: float = Field(
        10240.0,
        gt=0,
        description=(
            "past this many MB in TasksRootFolder the oldest attempts' folders go first "
            "(file key TasksRootFolderMaxSize)"
        ),
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
    execution_log_cache_retention_s: float = Field(
        _WEEK_S,
        gt=0,
        description=(
            "an unsent report cached longer than this is dropped, counted "
            "(file key ExecutionLogCacheRetention)"
        ),
    )
    execution_log_cache_max_size_mb: float = Field(
        1024.0,
        gt=0,
        description=(
            "past this many MB of cached reports the oldest are dropped, counted "
            "(file key ExecutionLogCacheMaxSize)"
        ),
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
    progress_interval_s: float = Field(
        1.0,
        ge=0.1,
        description="send task.progress at most this often per attempt; the newest value wins",
    )
    project_cache_folder: Path = Field(
        default_factory=lambda: _state_dir() / "projects",
        description="project archives cached by content hash",
    )
    project_cache_retention_s: float = Field(
        _WEEK_S,
        gt=0,
        description=(
            "a cached project version unused this long is removed; one in use never is "
            "(file key ProjectCacheRetention)"
        ),
    )
    project_cache_max_size_mb: float = Field(
        5120.0,
        gt=0,
        description=(
            "past this many MB of cached projects the least recently used go first "
            "(file key ProjectCacheMaxSize)"
        ),
    )
    retention_sweep_interval_s: float = Field(
        300.0,
        gt=0,
        description=(
            "how often old task folders, cached reports and projects are swept "
            "(file key RetentionSweepInterval)"
        ),
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
        "auto",
        min_length=1,
        description=(
            "RabbitMQ user of the master; task and cancel messages from others are refused. "
            "auto: scaleout-master on amqps://; on plain amqp:// (loopback only, one dev "
            "user for everyone) the worker's own login"
        ),
    )

    @property
    def package_owner(self) -> str:
        """The worker's part of its packages' mark (consumers/worker/marks.py)."""
        return f"{self.worker_id}:{self.tasks_root_folder.resolve()}"

    def master_user(self, login: str) -> str:
        """The user_id a task or cancel must carry, ``master_user_id`` resolved: the same
        rule, from the same URL, as the master's ``sender_identity = auto``."""
        if self.master_user_id != "auto":
            return self.master_user_id
        return DEFAULT_MASTER_USER if self.broker.uses_tls else login

    @field_validator(
        "agent_heartbeat_interval_s",
        "task_heartbeat_interval_s",
        "heartbeat_error_tolerance_s",
        "lease_interval_s",
        "shutdown_grace_s",
        "kill_grace_s",
        "project_fetch_timeout_s",
        "tasks_root_folder_retention_s",
        "execution_log_cache_retention_s",
        "project_cache_retention_s",
        "retention_sweep_interval_s",
        mode="before",
    )
    @classmethod
    def _timespan(cls, value: object) -> object:
        return parse_timespan(value)
