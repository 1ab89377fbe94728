"""Reads for the web console (``scaleout web``): the All Executions report a page at a
time, parameter values with sensitive ones masked, the deployed projects, and the rows
its charts draw. Read-only; every write goes through :mod:`dispatcher.api`.

Paging is keyset paging on ``execution_id`` (newest first): a page is one range read of
the executions' primary key, however many rows there are, where OFFSET would read every
skipped row.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TypeVar

import sqlalchemy as sa

from dispatcher.catalog import reads
from dispatcher.catalog.engine import Timing, Tx, aware, to_db, utc
from dispatcher.catalog.projects import manifest_at
from dispatcher.catalog.records import ExecutionRow
from dispatcher.errors import NotFound
from schemas.project import ParameterSpec
from schemas.states import ExecutionStatus

T = TypeVar("T")


class Reader(Protocol):
    """The catalog's read-only transaction runner (``Catalog._read``)."""

    def __call__(self, operation: Callable[[Tx], T], /) -> T: ...


MASK = "********"
"""What a sensitive value reads as: the value itself never leaves the catalog here."""
OBJECT_PROJECT, OBJECT_PACKAGE = 20, 30
PAGE_MAX = 500


@dataclass(frozen=True, slots=True)
class ExecutionFilter:
    """The All Executions report's filters; empty fields do not filter."""

    statuses: tuple[ExecutionStatus, ...] = ()
    folder: str = ""
    project: str = ""
    package: str = ""
    worker: str = ""
    since: datetime | None = None
    until: datetime | None = None
    """Created at or after ``since`` and before ``until`` (aware UTC)."""


@dataclass(frozen=True, slots=True)
class ExecutionPage:
    rows: list[ExecutionRow]
    next_before: int | None
    """The ``before`` of the next (older) page; None on the last page."""


@dataclass(frozen=True, slots=True)
class ParameterValueRow:
    object_type: int
    name: str
    value: str
    """The stored value as JSON text, or :data:`MASK` for a sensitive one."""
    sensitive: bool
    given: bool
    """Set on the execution; False: the declared default applies."""


@dataclass(frozen=True, slots=True)
class PackageInfo:
    name: str
    description: str
    parameters: tuple[ParameterSpec, ...]
    """Declared parameters; a sensitive one's default is replaced by :data:`MASK`."""


@dataclass(frozen=True, slots=True)
class ProjectInfo:
    folder: str
    name: str
    description: str
    project_lsn: int | None
    last_deployed_time: datetime
    versions: tuple[int, ...]
    parameters: tuple[ParameterSpec, ...]
    packages: tuple[PackageInfo, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class Ended:
    """One execution that reached a terminal status."""

    execution_id: int
    status: ExecutionStatus
    end_time: datetime


@dataclass(frozen=True, slots=True)
class Latency:
    """A first attempt's wait: from the start request (task created) to the worker's start."""

    execution_id: int
    started_at: datetime
    seconds: float


@dataclass(frozen=True, slots=True)
class AttemptSpan:
    """One attempt for the timeline: which worker ran it, when, how it ended."""

    execution_id: int
    attempt: int
    worker_agent_id: str
    dispatched_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    outcome: str | None


class ConsoleReads:
    """The console's read queries, each one read-only transaction of the catalog."""

    def __init__(self, read: Reader, timing: Timing) -> None:
        self._read = read
        self._timing = timing

    def executions_page(
        self, where: ExecutionFilter, *, before: int | None = None, limit: int = 50
    ) -> ExecutionPage:
        return self._read(lambda tx: executions_page(tx, where, before, limit))

    def execution_parameters(self, execution_id: int) -> list[ParameterValueRow]:
        return self._read(lambda tx: execution_parameters(tx, execution_id))

    def projects(self) -> list[ProjectInfo]:
        return self._read(projects)

    def package(self, folder: str, project: str, package: str) -> tuple[ProjectInfo, PackageInfo]:
        """The project and package as deployed now; NotFound when either is unknown."""
        for info in self.projects():
            if (info.folder, info.name) == (folder, project):
                for found in info.packages:
                    if found.name == package:
                        return info, found
        msg = f"package {folder}/{project}/{package} is not deployed"
        raise NotFound(msg, hint="deploy the project first: `scaleout deploy`")

    def ended_since(self, since: datetime) -> list[Ended]:
        return self._read(lambda tx: ended_since(tx, since))

    def latencies_since(self, since: datetime) -> list[Latency]:
        return self._read(lambda tx: latencies_since(tx, since))

    def attempts_since(self, since: datetime) -> list[AttemptSpan]:
        return self._read(lambda tx: attempts_since(tx, since))

    def now(self) -> datetime:
        """The database's clock (charts are drawn on it, as the master's times are)."""
        return self._read(lambda tx: utc(tx.now))


def executions_page(
    tx: Tx, where: ExecutionFilter, before: int | None, limit: int
) -> ExecutionPage:
    """Newest first, ids below ``before``; one row more than asked says if a page follows."""
    e = tx.t.executions
    size = min(max(limit, 1), PAGE_MAX)
    query = reads._executions_query(tx)  # the same row shape as `show`
    for condition in _conditions(tx, where):
        query = query.where(condition)
    if before is not None:
        query = query.where(e.c.execution_id < before)
    query = query.order_by(e.c.execution_id.desc()).limit(size + 1)
    found = tx.conn.execute(query).all()
    rows = reads._execution_rows(tx, found[:size])
    next_before = rows[-1].execution_id if len(found) > size else None
    return ExecutionPage(rows, next_before)


def _conditions(tx: Tx, where: ExecutionFilter) -> list[sa.ColumnElement[bool]]:
    e, o = tx.t.executions, tx.t.operations
    conditions: list[sa.ColumnElement[bool]] = []
    if where.statuses:
        conditions.append(o.c.status.in_(sorted(int(s) for s in where.statuses)))
    for column, value in (
        (e.c.folder_name, where.folder),
        (e.c.project_name, where.project),
        (e.c.package_name, where.package),
        (o.c.worker_agent_id, where.worker),
    ):
        if value:
            conditions.append(column == value)
    if where.since is not None:
        conditions.append(o.c.created_time >= to_db(tx, where.since))
    if where.until is not None:
        conditions.append(o.c.created_time < to_db(tx, where.until))
    return conditions


def execution_parameters(tx: Tx, execution_id: int) -> list[ParameterValueRow]:
    """Values set on the execution, then declared defaults of the others; sensitive ones
    masked here, so no caller can render them."""
    row = reads.get_execution(tx, execution_id)  # NotFound for an unknown id
    values = tx.t.execution_parameter_values
    query = (
        sa.select(values)
        .where(values.c.execution_id == execution_id)
        .order_by(values.c.object_type, values.c.parameter_name)
    )
    given = [
        ParameterValueRow(
            r.object_type,
            r.parameter_name,
            MASK if r.sensitive else r.parameter_value,
            bool(r.sensitive),
            given=True,
        )
        for r in tx.conn.execute(query)
    ]
    if row.project_lsn is None:
        return given
    manifest = manifest_at(tx, row.project_lsn)
    package = manifest.package(row.package_name)
    declared = [(OBJECT_PROJECT, p) for p in manifest.parameters]
    declared += [(OBJECT_PACKAGE, p) for p in (package.parameters if package else ())]
    seen = {(p.object_type, p.name) for p in given}
    defaults = [
        ParameterValueRow(
            object_type,
            spec.name,
            _shown_default(spec),
            spec.sensitive,
            given=False,
        )
        for object_type, spec in declared
        if (object_type, spec.name) not in seen
    ]
    return given + defaults


def _shown_default(spec: ParameterSpec) -> str:
    if spec.sensitive and spec.default is not None:
        return MASK
    return "" if spec.default is None else json.dumps(spec.default)


def _masked(spec: ParameterSpec) -> ParameterSpec:
    if spec.sensitive and spec.default is not None:
        return spec.model_copy(update={"default": MASK})
    return spec


def projects(tx: Tx) -> list[ProjectInfo]:
    """Every deployed project, by folder then name, with its versions and, at its current
    version, its packages and parameters."""
    f, p, v = tx.t.folders, tx.t.projects, tx.t.object_versions
    query = (
        sa.select(p, f.c.name.label("folder_name"))
        .join(f, f.c.folder_id == p.c.folder_id)
        .order_by(f.c.name, p.c.name)
    )
    found = tx.conn.execute(query).all()
    versions: dict[int, list[int]] = {}
    lsns = sa.select(v.c.object_id, v.c.object_version_lsn).order_by(v.c.object_version_lsn)
    for row in tx.conn.execute(lsns):
        versions.setdefault(row.object_id, []).append(row.object_version_lsn)
    return [_project_info(tx, row, tuple(versions.get(row.project_id, []))) for row in found]


def _project_info(tx: Tx, row: Any, versions: tuple[int, ...]) -> ProjectInfo:
    packages: tuple[PackageInfo, ...] = ()
    parameters: tuple[ParameterSpec, ...] = ()
    if row.object_version_lsn is not None:
        manifest = manifest_at(tx, row.object_version_lsn)
        parameters = tuple(_masked(s) for s in manifest.parameters)
        packages = tuple(
            PackageInfo(k.name, k.description, tuple(_masked(s) for s in k.parameters))
            for k in manifest.packages
        )
    return ProjectInfo(
        folder=row.folder_name,
        name=row.name,
        description=row.description,
        project_lsn=row.object_version_lsn,
        last_deployed_time=utc(row.last_deployed_time),
        versions=versions,
        parameters=parameters,
        packages=packages,
    )


def ended_since(tx: Tx, since: datetime) -> list[Ended]:
    o = tx.t.operations
    terminal = sorted(int(s) for s in ExecutionStatus if s.is_terminal)
    query = (
        sa.select(o.c.operation_id, o.c.status, o.c.end_time)
        .where(
            o.c.operation_type == reads.OPERATION_EXECUTION,
            o.c.status.in_(terminal),
            o.c.end_time >= to_db(tx, since),
        )
        .order_by(o.c.end_time)
    )
    return [
        Ended(row.operation_id, ExecutionStatus(row.status), utc(row.end_time))
        for row in tx.conn.execute(query)
    ]


def latencies_since(tx: Tx, since: datetime) -> list[Latency]:
    """First attempts started since ``since``: seconds from the task's creation (the start
    request) to the worker's start, live or moved to history."""
    points: list[Latency] = []
    for tasks, attempts in (
        (tx.t.tasks, tx.t.task_attempts),
        (tx.t.tasks_history, tx.t.task_attempts_history),
    ):
        query = (
            sa.select(tasks.c.execution_id, tasks.c.created_time, attempts.c.started_at)
            .join(attempts, attempts.c.task_id == tasks.c.task_id)
            .where(attempts.c.attempt == 1, attempts.c.started_at >= to_db(tx, since))
        )
        for row in tx.conn.execute(query):
            started = utc(row.started_at)
            seconds = max((started - utc(row.created_time)).total_seconds(), 0.0)
            points.append(Latency(row.execution_id, started, seconds))
    return sorted(points, key=lambda p: p.started_at)


def attempts_since(tx: Tx, since: datetime) -> list[AttemptSpan]:
    """Attempts that were running at or after ``since`` (still open, or ended since)."""
    spans: list[AttemptSpan] = []
    moment = to_db(tx, since)
    for tasks, attempts in (
        (tx.t.tasks, tx.t.task_attempts),
        (tx.t.tasks_history, tx.t.task_attempts_history),
    ):
        query = (
            sa.select(tasks.c.execution_id, attempts)
            .join(tasks, tasks.c.task_id == attempts.c.task_id)
            .where(sa.or_(attempts.c.ended_at.is_(None), attempts.c.ended_at >= moment))
        )
        spans += [
            AttemptSpan(
                execution_id=row.execution_id,
                attempt=row.attempt,
                worker_agent_id=row.worker_agent_id,
                dispatched_at=utc(row.dispatched_at),
                started_at=aware(row.started_at),
                ended_at=aware(row.ended_at),
                outcome=row.outcome,
            )
            for row in tx.conn.execute(query)
        ]
    return sorted(spans, key=lambda s: (s.worker_agent_id, s.dispatched_at))


def known_statuses(keys: Sequence[str]) -> tuple[ExecutionStatus, ...]:
    """Statuses by their keys (``succeeded``, ``ended_unexpectedly``); ValueError names
    an unknown one and the known ones."""
    by_key = {s.key: s for s in ExecutionStatus}
    unknown = [k for k in keys if k not in by_key]
    if unknown:
        msg = f"unknown status {unknown[0]!r}; use one of {', '.join(by_key)}"
        raise ValueError(msg)
    return tuple(by_key[k] for k in keys)
