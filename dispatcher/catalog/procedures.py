"""SSISDB's execution procedures, with SSIS's refusals.

Each function runs inside one transaction (:class:`~dispatcher.catalog.engine.Tx`); a
refusal raises before anything is written, or the transaction rolls back, so a refused
call leaves no partial rows.
"""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from dispatcher.catalog.engine import Tx, inserted_ids, locked
from dispatcher.catalog.environments import (
    resolve_values,
    resolved_values,
    unresolved_references,
)
from dispatcher.catalog.projects import folder_id, manifest_at, project_row
from dispatcher.errors import NotFound, OperationRefused
from dispatcher.keys import Keyring, is_sealed
from schemas.messages import ParameterScalar
from schemas.project import (
    ParameterSpec,
    ProjectManifest,
)
from schemas.states import ExecutionStatus, TaskState

OPERATION_EXECUTION = 200
OBJECT_PROJECT, OBJECT_PACKAGE, OBJECT_SYSTEM = 20, 30, 50
SYSTEM_PARAMETERS = {
    spec.name: spec
    for spec in (
        ParameterSpec(name="LOGGING_LEVEL", type="int"),
        ParameterSpec(name="CUSTOMIZED_LOGGING_LEVEL", type="string"),
        ParameterSpec(name="SYNCHRONIZED", type="bool"),
        ParameterSpec(name="DUMP_ON_ERROR", type="bool"),
        ParameterSpec(name="DUMP_ON_EVENT", type="bool"),
        ParameterSpec(name="DUMP_EVENT_CODE", type="string"),
        ParameterSpec(name="CALLER_INFO", type="string"),
    )
}


def create_execution(
    tx: Tx,
    keys: Keyring,
    *,
    folder_name: str,
    project_name: str,
    package_name: str,
    reference_id: int | None,
    use32bitruntime: bool,
    runinscaleout: bool | None,
    useanyworker: bool,
    caller_name: str | None,
    explicit: frozenset[tuple[int | None, str]] = frozenset(),
) -> int:
    """SSIS's create_execution. Every declared parameter with a value gets it now (see
    :mod:`dispatcher.catalog.environments`), except those in ``explicit``, which the
    caller sets in the same transaction (so a reference need not cover them)."""
    _require_scale_out(tx, runinscaleout)
    project, lsn = _entry_point(tx, folder_name, project_name, package_name)
    operation = _operation_row(tx, int(project.project_id), project_name, caller_name)
    [execution_id] = inserted_ids(tx, tx.t.operations, [operation])
    job_id = uuid.uuid4()
    tx.conn.execute(
        sa.insert(tx.t.executions),
        _execution_row(
            Package(lsn, project_name, package_name, folder_name),
            execution_id,
            job_id,
            reference_id=reference_id,
            use32bitruntime=use32bitruntime,
            useanyworker=useanyworker,
        ),
    )
    tx.conn.execute(
        sa.insert(tx.t.jobs), _job_row(tx, job_id, execution_id, useanyworker, caller_name)
    )
    manifest = manifest_at(tx, lsn)
    given = {_where_declared(manifest, package_name, t, name) for t, name in explicit}
    resolve_values(tx, keys, execution_id, project, lsn, package_name, reference_id, given)
    return execution_id


def _where_declared(
    manifest: ProjectManifest, package: str, object_type: int | None, name: str
) -> tuple[int, str]:
    """(object type, name) a dtexec-style name sets: unprefixed, the package's, else the
    project's (an undeclared one is refused when it is set)."""
    if object_type is None:
        declared = _declared(manifest, package, OBJECT_PACKAGE)
        object_type = OBJECT_PACKAGE if name in declared else OBJECT_PROJECT
    return object_type, name


def _entry_point(tx: Tx, folder_name: str, project_name: str, package: str) -> tuple[Any, int]:
    """The project row and current lsn that hold ``package``; NotFound otherwise."""
    fid = folder_id(tx, folder_name)
    if fid is None:
        raise NotFound(f"folder {folder_name!r} does not exist")
    project = project_row(tx, fid, project_name)
    if project is None or project.object_version_lsn is None:
        raise NotFound(f"project {project_name!r} does not exist in folder {folder_name!r}")
    lsn = int(project.object_version_lsn)
    if manifest_at(tx, lsn).package(package) is None:
        raise NotFound(f"package {package!r} does not exist in project {project_name!r}")
    return project, lsn


def _execution_row(
    package: Package,
    execution_id: int,
    job_id: uuid.UUID,
    *,
    reference_id: int | None,
    use32bitruntime: bool,
    useanyworker: bool,
) -> dict[str, Any]:
    return {
        "execution_id": execution_id,
        "folder_name": package.folder_name,
        "project_name": package.project_name,
        "package_name": package.package_name,
        "reference_id": reference_id,
        "project_lsn": package.lsn,
        "use32bitruntime": use32bitruntime,
        "runinscaleout": True,
        "useanyworker": useanyworker,
        "job_id": job_id,
    }


def _job_row(
    tx: Tx, job_id: uuid.UUID, execution_id: int, useanyworker: bool, creator: str | None
) -> dict[str, Any]:
    """SSIS's internal.create_job: the job that will hold the execution's task."""
    return {
        "job_id": job_id,
        "execution_id": execution_id,
        "job_type": 1,
        "use_any_worker": useanyworker,
        "is_cancelled": False,
        "creator": creator,
        "created_time": tx.now,
        "last_updated_time": tx.now,
    }


def _require_scale_out(tx: Tx, runinscaleout: bool | None) -> None:
    if runinscaleout is None:
        props = tx.t.catalog_properties
        query = sa.select(props.c.property_value).where(
            props.c.property_name == "DEFAULT_EXECUTION_MODE"
        )
        runinscaleout = tx.conn.execute(query).scalar_one_or_none() != "0"
    if not runinscaleout:
        msg = "scaleout runs executions in Scale Out only"
        raise OperationRefused(msg, hint="pass runinscaleout=True or leave it unset", code=27255)


def _operation_row(
    tx: Tx,
    project_id: int,
    project_name: str,
    caller: str | None,
    status: ExecutionStatus = ExecutionStatus.CREATED,
) -> dict[str, Any]:
    return {
        "operation_type": OPERATION_EXECUTION,
        "created_time": tx.now,
        "object_type": OBJECT_PROJECT,
        "object_id": project_id,
        "object_name": project_name,
        "status": int(status),
        "caller_name": caller,
        "executed_count": 0,
        "machine_name": "",
    }


def execution_row(tx: Tx, execution_id: int, *, lock: bool = False) -> Any:
    """The execution joined with its operation; NotFound when unknown."""
    e, o = tx.t.executions, tx.t.operations
    query = (
        sa.select(e, o.c.status, o.c.start_time)
        .join(o, o.c.operation_id == e.c.execution_id)
        .where(e.c.execution_id == execution_id)
    )
    if lock:
        query = locked(query, o)
    row = tx.conn.execute(query).one_or_none()
    if row is None:
        raise NotFound(f"execution {execution_id} does not exist", code=27101)
    return row


def _require_created(row: Any, action: str) -> None:
    status = ExecutionStatus(row.status)
    if status is not ExecutionStatus.CREATED:
        msg = f"cannot {action}: execution {row.execution_id} already started / is {status.label}"
        raise OperationRefused(msg)


@dataclass(frozen=True, slots=True)
class NewExecution:
    """Everything ``executions create`` asks for, written in one transaction: the
    execution, its parameter values (``object_type`` None: package, then project, as
    dtexec's unprefixed ``/Parameter``), its allowed workers and, with ``start``, its task.
    A refusal anywhere rolls all of it back."""

    folder_name: str
    project_name: str
    package_name: str
    parameters: Sequence[tuple[int | None, str, ParameterScalar]] = ()
    workers: Sequence[str] = ()
    caller_name: str | None = None
    start: bool = False
    retry_count: int = 0
    reference_id: int | None = None


def create_execution_with(tx: Tx, keys: Keyring, request: NewExecution) -> int:
    if request.retry_count < 0:
        msg = f"retry_count must be 0 or more, not {request.retry_count}"
        raise OperationRefused(msg, code=27101)
    execution_id = create_execution(
        tx,
        keys,
        folder_name=request.folder_name,
        project_name=request.project_name,
        package_name=request.package_name,
        reference_id=request.reference_id,
        use32bitruntime=False,
        runinscaleout=True,
        useanyworker=not request.workers,
        caller_name=request.caller_name,
        explicit=frozenset((t, name) for t, name, _ in request.parameters),
    )
    for object_type, name, value in request.parameters:
        set_parameter_by_name(tx, keys, execution_id, object_type, name, value)
    for worker in request.workers:
        add_execution_worker(tx, execution_id, worker)
    if request.start:
        _require_parameters(tx, execution_row(tx, execution_id), subject=request.package_name)
        start_execution(tx, execution_id, request.retry_count)
    return execution_id


MAX_EXECUTIONS_PER_CALL = 1000
"""The most executions one :func:`create_executions_with` call creates: its transaction
holds the catalog's write lock while it runs (the whole database on SQLite)."""


def create_executions_with(tx: Tx, keys: Keyring, requests: Sequence[NewExecution]) -> list[int]:
    """:func:`create_execution_with` for each request, in one transaction; the new ids in
    the requests' order. Consecutive equal requests that set nothing per execution (no
    parameters, no workers) are written together, one INSERT per table, with the rows one
    call at a time would write. A refusal anywhere writes nothing."""
    if len(requests) > MAX_EXECUTIONS_PER_CALL:
        msg = f"{len(requests)} executions in one call, more than {MAX_EXECUTIONS_PER_CALL}"
        raise OperationRefused(msg, hint=f"split them into calls of {MAX_EXECUTIONS_PER_CALL}")
    ids: list[int] = []
    for request, alike in itertools.groupby(requests):
        count = len(list(alike))
        if request.parameters or request.workers:
            ids.extend(create_execution_with(tx, keys, request) for _ in range(count))
        else:
            ids.extend(_create_alike(tx, keys, request, count))
    return ids


def _create_alike(tx: Tx, keys: Keyring, request: NewExecution, count: int) -> list[int]:
    """``count`` executions of ``request``, which sets no value or worker of its own: they
    get the same values (the package's resolved ones), checked once."""
    if request.retry_count < 0:
        msg = f"retry_count must be 0 or more, not {request.retry_count}"
        raise OperationRefused(msg, code=27101)
    folder, project_name, package_name = (
        request.folder_name,
        request.project_name,
        request.package_name,
    )
    project, lsn = _entry_point(tx, folder, project_name, package_name)
    package = Package(lsn, project_name, package_name, folder)
    values = resolved_values(tx, keys, project, lsn, package_name, request.reference_id, set())
    status = ExecutionStatus.CREATED
    if request.start:
        given = {(value["object_type"], value["parameter_name"]) for value in values}
        _require_given(tx, package, given, package_name)
        status = ExecutionStatus.PENDING  # what start_execution moves it to
    operation = _operation_row(tx, int(project.project_id), project_name, request.caller_name)
    ids = inserted_ids(tx, tx.t.operations, [{**operation, "status": int(status)}] * count)
    jobs = {execution_id: uuid.uuid4() for execution_id in ids}
    ref = request.reference_id
    executions = [
        _execution_row(package, i, job, reference_id=ref, use32bitruntime=False, useanyworker=True)
        for i, job in jobs.items()
    ]
    tx.conn.execute(sa.insert(tx.t.executions), executions)
    tx.conn.execute(
        sa.insert(tx.t.jobs),
        [_job_row(tx, job, i, True, request.caller_name) for i, job in jobs.items()],
    )
    if values:
        rows = [{**value, "execution_id": i} for i in ids for value in values]
        tx.conn.execute(sa.insert(tx.t.execution_parameter_values), rows)
    if request.start:
        tasks = [_task_row(tx, i, job, request.retry_count) for i, job in jobs.items()]
        tx.conn.execute(sa.insert(tx.t.tasks), tasks)
    return ids


def rerun_execution(tx: Tx, keys: Keyring, execution_id: int, caller_name: str | None) -> int:
    """A started copy of ``execution_id``: same package, values, workers, retry count."""
    row = execution_row(tx, execution_id)
    workers = _allowed_of(tx, row)
    new_id = create_execution(
        tx,
        keys,
        folder_name=row.folder_name,
        project_name=row.project_name,
        package_name=row.package_name,
        reference_id=None,
        use32bitruntime=bool(row.use32bitruntime),
        runinscaleout=True,
        useanyworker=bool(row.useanyworker),
        caller_name=caller_name,
    )
    for value in _values_of(tx, execution_id):
        _copy_value(tx, keys, new_id, value)
    for worker in workers:
        add_execution_worker(tx, new_id, worker)
    start_execution(tx, new_id, _retry_count_of(tx, execution_id))
    return new_id


def _allowed_of(tx: Tx, row: Any) -> list[str]:
    if row.useanyworker:
        return []
    members = tx.t.job_worker_agents
    query = sa.select(members.c.worker_agent_id).where(members.c.job_id == row.job_id)
    workers = sorted(tx.conn.execute(query).scalars())
    if not workers:
        msg = (
            f"execution {row.execution_id} ran on chosen workers, and that list was cleaned "
            "up with its finished job"
        )
        hint = "create it again with `scaleout executions create ... --worker ID`"
        raise OperationRefused(msg, hint=hint)
    return workers


def _values_of(tx: Tx, execution_id: int) -> list[Any]:
    values = tx.t.execution_parameter_values
    query = (
        sa.select(values)
        .where(values.c.execution_id == execution_id)
        .order_by(values.c.object_type, values.c.parameter_name)
    )
    return list(tx.conn.execute(query))


def _copy_value(tx: Tx, keys: Keyring, execution_id: int, value: Any) -> None:
    """One value into the new execution, checked against the current version; a sealed
    value stays sealed (no key needed) while its parameter is still sensitive."""
    stored = str(value.parameter_value)
    if not is_sealed(stored):
        plain = json.loads(stored)
        set_execution_parameter_value(
            tx, keys, execution_id, value.object_type, value.parameter_name, plain
        )
        return
    row = execution_row(tx, execution_id)
    spec = _parameter_spec(tx, row, value.object_type, value.parameter_name)
    if not spec.sensitive:
        what = f"execution {value.execution_id}'s parameter {value.parameter_name}"
        plain = json.loads(keys.open(stored, what=what))
        set_execution_parameter_value(
            tx, keys, execution_id, value.object_type, value.parameter_name, plain
        )
        return
    values = tx.t.execution_parameter_values
    tx.conn.execute(
        sa.delete(values).where(
            values.c.execution_id == execution_id,
            values.c.object_type == value.object_type,
            values.c.parameter_name == value.parameter_name,
        )
    )
    tx.conn.execute(
        sa.insert(values).values(
            execution_id=execution_id,
            object_type=value.object_type,
            parameter_name=value.parameter_name,
            parameter_value=stored,
            sensitive=True,
        )
    )


def _retry_count_of(tx: Tx, execution_id: int) -> int:
    """The retries the execution was started with (0 when it never started)."""
    for table in (tx.t.tasks, tx.t.tasks_history):
        query = sa.select(table.c.max_executed_count).where(table.c.execution_id == execution_id)
        found = tx.conn.execute(query.limit(1)).scalar_one_or_none()
        if found is not None:
            return max(int(found) - 1, 0)
    return 0


def set_parameter_by_name(  # noqa: PLR0917  # SSIS's parameters, in SSIS's order
    tx: Tx,
    keys: Keyring,
    execution_id: int,
    object_type: int | None,
    name: str,
    value: ParameterScalar,
) -> None:
    """``set_execution_parameter_value``; with ``object_type`` None the name is tried as a
    package parameter, then as a project one."""
    if object_type is not None:
        set_execution_parameter_value(tx, keys, execution_id, object_type, name, value)
        return
    row = execution_row(tx, execution_id)
    manifest = manifest_at(tx, row.project_lsn)
    for candidate in (OBJECT_PACKAGE, OBJECT_PROJECT):
        if name in _declared(manifest, row.package_name, candidate):
            set_execution_parameter_value(tx, keys, execution_id, candidate, name, value)
            return
    msg = f"parameter {name!r} is declared neither by the package nor the project"
    raise NotFound(msg, hint="see the project's manifest.json (`scaleout packages show`)")


def set_execution_parameter_value(  # noqa: PLR0917  # SSIS's parameters, in SSIS's order
    tx: Tx, keys: Keyring, execution_id: int, object_type: int, name: str, value: ParameterScalar
) -> None:
    row = execution_row(tx, execution_id, lock=True)
    _require_created(row, f"set parameter {name}")
    spec = _parameter_spec(tx, row, object_type, name)
    try:
        coerced = spec.coerce(value)
    except ValueError as exc:
        shown = f"parameter {name} takes a {spec.type}, not that value" if spec.sensitive else ""
        raise OperationRefused(shown or str(exc), code=27101) from None
    stored = json.dumps(coerced)
    if spec.sensitive:
        stored = keys.seal(stored, what=f"sensitive parameter {name}")
    values = tx.t.execution_parameter_values
    key = (
        values.c.execution_id == execution_id,
        values.c.object_type == object_type,
        values.c.parameter_name == name,
    )
    tx.conn.execute(sa.delete(values).where(*key))
    tx.conn.execute(
        sa.insert(values).values(
            execution_id=execution_id,
            object_type=object_type,
            parameter_name=name,
            parameter_value=stored,
            sensitive=spec.sensitive,
        )
    )


def _parameter_spec(tx: Tx, row: Any, object_type: int, name: str) -> ParameterSpec:
    if object_type == OBJECT_SYSTEM:
        specs = SYSTEM_PARAMETERS
    elif object_type in (OBJECT_PROJECT, OBJECT_PACKAGE):
        specs = _declared(manifest_at(tx, row.project_lsn), row.package_name, object_type)
    else:
        msg = f"object_type must be 20 (project), 30 (package) or 50 (system), not {object_type}"
        raise OperationRefused(msg, code=27101)
    if name not in specs:
        raise NotFound(_undeclared(tx, row, object_type, name), hint=_PREFIX_HINT)
    return specs[name]


_PREFIX_HINT = "$Project::NAME sets a project parameter, $Package::NAME a package one"
_KINDS = {OBJECT_PROJECT: "project", OBJECT_PACKAGE: "package", OBJECT_SYSTEM: "system"}


def _undeclared(tx: Tx, row: Any, object_type: int, name: str) -> str:
    """Why ``name`` is refused, naming where it is declared when it is (a $Package:: on a
    project parameter is the usual slip)."""
    said = f"parameter {name!r} is not a {_KINDS[object_type]} parameter"
    if object_type == OBJECT_SYSTEM:
        return f"{said} (LOGGING_LEVEL, SYNCHRONIZED, ... are)"
    manifest = manifest_at(tx, row.project_lsn)
    other = OBJECT_PROJECT if object_type == OBJECT_PACKAGE else OBJECT_PACKAGE
    if name in _declared(manifest, row.package_name, other):
        return f"{said}: it is a {_KINDS[other]} parameter"
    return f"{said} of {row.package_name if object_type == OBJECT_PACKAGE else row.project_name}"


def _declared(
    manifest: ProjectManifest, package: str, object_type: int
) -> dict[str, ParameterSpec]:
    if object_type == OBJECT_PROJECT:
        return {p.name: p for p in manifest.parameters}
    spec = manifest.package(package)
    return {p.name: p for p in spec.parameters} if spec else {}


def add_execution_worker(tx: Tx, execution_id: int, workeragent_id: str) -> None:
    row = execution_row(tx, execution_id, lock=True)
    if not row.runinscaleout:
        raise OperationRefused(f"execution {execution_id} is not in Scale Out", code=27255)
    if row.useanyworker:
        msg = f"execution {execution_id} already allows any worker (useanyworker=1)"
        raise OperationRefused(msg, code=27251)
    _require_created(row, f"add worker {workeragent_id}")
    workers, allowed = tx.t.worker_agents, tx.t.job_worker_agents
    known = sa.select(workers.c.worker_agent_id).where(workers.c.worker_agent_id == workeragent_id)
    if tx.conn.execute(known).scalar_one_or_none() is None:
        raise NotFound(f"worker agent {workeragent_id!r} does not exist", code=27243)
    present = sa.select(allowed.c.job_id).where(
        allowed.c.job_id == row.job_id, allowed.c.worker_agent_id == workeragent_id
    )
    if tx.conn.execute(present).first() is None:
        tx.conn.execute(
            sa.insert(allowed).values(job_id=row.job_id, worker_agent_id=workeragent_id)
        )


def start_execution(tx: Tx, execution_id: int, retry_count: int = 0) -> None:
    row = execution_row(tx, execution_id, lock=True)
    _require_created(row, "start")
    if retry_count < 0:
        raise OperationRefused(f"retry_count must be 0 or more, not {retry_count}", code=27101)
    _require_parameters(tx, row)
    ops = tx.t.operations
    moved = tx.conn.execute(
        sa.update(ops)
        .where(ops.c.operation_id == execution_id, ops.c.status == int(ExecutionStatus.CREATED))
        .values(status=int(ExecutionStatus.PENDING), machine_name="")
    )
    if moved.rowcount != 1:
        raise OperationRefused(f"execution {execution_id} already started")
    tx.conn.execute(sa.insert(tx.t.tasks), _task_row(tx, execution_id, row.job_id, retry_count))


def _task_row(tx: Tx, execution_id: int, job_id: uuid.UUID, retry_count: int) -> dict[str, Any]:
    """A started execution's task: pending, ready now, retry_count + 1 attempts."""
    return {
        "task_id": uuid.uuid4(),
        "job_id": job_id,
        "execution_id": execution_id,
        "task_type": 0,
        "status": int(TaskState.PENDING),
        "attempt": 0,
        "executed_count": 0,
        "max_executed_count": retry_count + 1,
        "ready_for_dispatch_time": tx.now,
        "is_cancelled": False,
        "cancel_sent": False,
        "published": False,
        "created_time": tx.now,
        "last_updated_time": tx.now,
    }


def _require_parameters(tx: Tx, row: Any, *, subject: str = "") -> None:
    values = tx.t.execution_parameter_values
    query = sa.select(values.c.object_type, values.c.parameter_name).where(
        values.c.execution_id == row.execution_id
    )
    given = {(r.object_type, r.parameter_name) for r in tx.conn.execute(query)}
    package = Package(int(row.project_lsn), row.project_name, row.package_name, row.folder_name)
    _require_given(tx, package, given, subject or f"execution {row.execution_id}")


@dataclass(frozen=True, slots=True)
class Package:
    """A package of one project version: what an execution runs."""

    lsn: int
    project_name: str
    package_name: str
    folder_name: str


def _require_given(tx: Tx, package: Package, given: set[tuple[int, str]], who: str) -> None:
    """Refuse to start an execution of ``package`` when a required parameter or a
    referenced one is not in ``given``."""
    manifest = manifest_at(tx, package.lsn)
    missing = [
        name
        for object_type in (OBJECT_PROJECT, OBJECT_PACKAGE)
        for name, spec in _declared(manifest, package.package_name, object_type).items()
        if spec.required and spec.default is None and (object_type, name) not in given
    ]
    referenced = unresolved_references(
        tx, package.lsn, package.project_name, package.package_name, given
    )
    if referenced:
        msg = f"{who} takes {', '.join(referenced)} from an environment, and has no reference"
        hint = "create it with --reference ID (`scaleout environments references`), or set them"
        raise OperationRefused(msg, hint=hint, code=27100)
    if missing:
        msg = f"{who} lacks required parameters: {', '.join(missing)}"
        hint = f"give them with --param, e.g. --param {missing[0]}=..."
        raise OperationRefused(msg, hint=hint, code=27100)
