"""The SSISDB catalog: tables, migrations and the :class:`Catalog` of named operations."""

from __future__ import annotations

from dispatcher.catalog.catalog import Catalog
from dispatcher.catalog.records import (
    Assignment,
    AttemptRow,
    CancelOrder,
    CatalogCounts,
    CleanupResult,
    DeployResult,
    ExecutionRow,
    ExpiredAttempt,
    HeartbeatResult,
    MessageRow,
    ReportOutcome,
    ReportResult,
    WorkerAgentRow,
)

__all__ = [
    "Assignment",
    "AttemptRow",
    "CancelOrder",
    "Catalog",
    "CatalogCounts",
    "CleanupResult",
    "DeployResult",
    "ExecutionRow",
    "ExpiredAttempt",
    "HeartbeatResult",
    "MessageRow",
    "ReportOutcome",
    "ReportResult",
    "WorkerAgentRow",
]
