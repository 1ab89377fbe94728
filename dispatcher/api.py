"""The Python API of scaleout: what an operator does, as calls. The ``scaleout`` CLI is a
thin shell over it, so a script can do everything the CLI does::

    from dispatcher.api import ScaleOut

    with ScaleOut.connect("sqlite:///ssisdb.sqlite3") as so:
        so.deploy(Path("examples/sales_etl"), folder="Finance")
        started = so.run("Finance", "SalesETL", "LoadSales", parameters={"Rows": 500})
        row = so.wait(started.execution_id, timeout_s=60)
        print(row.status.label)

Every operation is a catalog call (the catalog is the source of truth); only ``start``
also touches RabbitMQ, with a best-effort ``dispatch.wake`` so the master reacts at once
instead of at its next poll. Errors are :class:`dispatcher.errors.ScaleoutError`.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import urlsplit

from dispatcher.broker import Publisher
from dispatcher.broker.link import BrokerLink
from dispatcher.catalog import Catalog
from dispatcher.catalog.procedures import NewExecution
from dispatcher.catalog.records import (
    DeployResult,
    EnvironmentReferenceRow,
    EnvironmentRow,
    ExecutionFilter,
    ExecutionRow,
    ExecutionValueRow,
    FolderRow,
    LeaderLease,
    MasterRow,
    MessageRow,
    PackageRow,
    PendingFacts,
    ProjectRow,
    WorkerAgentRow,
)
from dispatcher.errors import OperationRefused, ScaleoutError
from dispatcher.keys import CatalogKey, Keyring, new_key_text, write_key_file
from dispatcher.outbound import declare_worker, publish_wake
from dispatcher.pending import explain
from dispatcher.projects import build_archive
from dispatcher.settings import BrokerSettings, MasterSettings
from schemas.messages import ParameterScalar
from schemas.project import ArchiveError, read_manifest
from schemas.states import ExecutionStatus

logger = logging.getLogger(__name__)

PROJECT_PARAMETER = 20
PACKAGE_PARAMETER = 30
SYSTEM_PARAMETER = 50
"""``object_type`` values of ``set_execution_parameter_value``, as in SSISDB."""

_PREFIXES = {
    "$project::": PROJECT_PARAMETER,
    "$package::": PACKAGE_PARAMETER,
    "$serveroption::": SYSTEM_PARAMETER,
}
"""dtexec's ``/Parameter`` prefixes, which SSIS users already type."""

BROKER_TIMEOUT_S = 3.0
"""A start must not hang on a dead broker: the master's poll dispatches anyway."""


class WaitTimeout(ScaleoutError):
    """An execution did not reach a terminal status in time; ``row`` is its last read."""

    def __init__(self, message: str, *, hint: str = "", row: ExecutionRow | None = None) -> None:
        super().__init__(message, hint=hint)
        self.row = row


MESSAGE_PAGE = 500
"""Messages read per query: a flood of log lines is paged, never loaded at once."""


class MessageFeed:
    """One execution's new messages, poll by poll: each message once, at most ``page`` per
    poll, each poll's batch in time order (then by id). The cursor is the message id, so a
    line that arrives late (a worker's cached report) is printed when it arrives."""

    def __init__(
        self, catalog: Catalog, execution_id: int, *, after_id: int = 0, page: int = MESSAGE_PAGE
    ) -> None:
        self._catalog = catalog
        self._execution_id = execution_id
        self._page = page
        self.after_id = after_id

    def poll(self) -> list[MessageRow]:
        batch = self._catalog.execution_messages(
            self._execution_id, after_id=self.after_id, limit=self._page
        )
        if batch:
            self.after_id = batch[-1].message_id
        return sorted(batch, key=lambda m: (m.message_time, m.message_id))


@dataclass(frozen=True, slots=True)
class Started:
    """An execution that was started; ``warning`` says when the master was not woken."""

    execution_id: int
    woken: bool
    warning: str = ""


@dataclass(frozen=True, slots=True)
class StartedMany:
    """Executions started together (:meth:`ScaleOut.run_many`), ids in order."""

    execution_ids: list[int]
    woken: bool
    warning: str = ""


def split_parameter(name: str) -> tuple[int | None, str]:
    """(object type or None when unprefixed, bare name) of ``$Package::Rows`` or ``Rows``."""
    lowered = name.lower()
    for prefix, object_type in _PREFIXES.items():
        if lowered.startswith(prefix):
            return object_type, name[len(prefix) :]
    return None, name


class ScaleOut:
    """A session with one catalog (and optionally the broker, to wake the master)."""

    def __init__(self, catalog: Catalog, broker: BrokerSettings | None = None) -> None:
        self.catalog = catalog
        self._broker = broker
        self._link = (
            BrokerLink(broker, name="scaleout-api", timeout_s=BROKER_TIMEOUT_S) if broker else None
        )

    @classmethod
    def open(cls, settings: MasterSettings) -> ScaleOut:
        """A session on the catalog and broker of the master's settings."""
        return cls(Catalog.for_master(settings), settings.broker)

    @classmethod
    def connect(
        cls,
        catalog_url: str,
        broker: BrokerSettings | None = None,
        *,
        keyring: Keyring | None = None,
    ) -> ScaleOut:
        """A session on ``catalog_url``; without ``broker``, starts do not wake the master.
        ``keyring`` defaults to the catalog key file ``catalog init`` writes, if any."""
        keys = keyring or Keyring.from_settings(None, None)
        return cls(Catalog.open(catalog_url, keyring=keys), broker)

    def close(self) -> None:
        if self._link is not None:
            self._link.close()
        self.catalog.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- the catalog itself --------------------------------------------------------------

    def init_catalog(self) -> str:
        """Create or upgrade the catalog's schema (idempotent); the revision it is at."""
        self.catalog.init()
        return self.catalog.schema_revision() or ""

    def catalog_revision(self) -> str | None:
        """The schema revision, or None when the catalog was never initialised."""
        return self.catalog.schema_revision()

    # -- projects ------------------------------------------------------------------------

    def deploy(self, source: Path | bytes, folder: str, project: str | None = None) -> DeployResult:
        """Deploy a project folder (zipped deterministically), a .zip file, or archive
        bytes into ``folder``; the project name defaults to the manifest's."""
        archive = read_archive(source)
        if project is None:
            try:
                project = read_manifest(archive).name
            except ArchiveError as exc:
                raise OperationRefused(
                    f"cannot deploy: {exc}", hint="see the manifest format in the README"
                ) from exc
        return self.catalog.deploy_project(folder, project, archive)

    # -- executions ----------------------------------------------------------------------

    def create_execution(
        self,
        folder: str,
        project: str,
        package: str,
        *,
        parameters: Mapping[str, ParameterScalar] | None = None,
        workers: Sequence[str] = (),
        caller_name: str | None = None,
        reference_id: int | None = None,
    ) -> int:
        """A new execution (status 1 created) with its parameter values and, when
        ``workers`` is given, restricted to those workers (SSIS ``add_execution_worker``).
        ``reference_id`` (an environment reference of the project) gives referenced
        parameters their variables' values, as SSIS's ``create_execution @reference_id``.
        One transaction: an unknown parameter, a wrong type or an unknown worker leaves
        nothing behind."""
        request = _new_execution(
            folder, project, package, parameters=parameters, workers=workers,
            caller=caller_name, reference_id=reference_id,
        )  # fmt: skip
        return self.catalog.create_execution_with(request)

    def set_parameter(self, execution_id: int, name: str, value: ParameterScalar) -> None:
        """Set a parameter value. ``$Project::``, ``$Package::`` and ``$ServerOption::``
        say where it is declared; a bare name is tried as a package parameter, then as a
        project one."""
        object_type, bare = split_parameter(name)
        self.catalog.set_parameter_by_name(execution_id, object_type, bare, value)

    def start(self, execution_id: int, retry_count: int = 0, *, wake: bool = True) -> Started:
        """Start an execution (SSIS ``start_execution``; attempts = retry_count + 1) and
        wake the master's dispatcher. A broker that does not answer is not an error: the
        master's poll dispatches the execution anyway, and ``warning`` says so. Starting
        many at once, pass ``wake=False`` and call :meth:`wake` once after."""
        self.catalog.start_execution(execution_id, retry_count)
        return self._woken(execution_id, wake=wake)

    def _woken(self, execution_id: int, *, wake: bool = True) -> Started:
        warning = self.wake(execution_id) if wake else ""
        return Started(execution_id, woken=not warning, warning=warning)

    def run(
        self,
        folder: str,
        project: str,
        package: str,
        *,
        parameters: Mapping[str, ParameterScalar] | None = None,
        workers: Sequence[str] = (),
        retry_count: int = 0,
        caller_name: str | None = None,
        reference_id: int | None = None,
    ) -> Started:
        """Create and start an execution in one transaction (a refused start, such as a
        missing required parameter, leaves no execution behind), then wake the master."""
        request = _new_execution(
            folder, project, package, parameters=parameters, workers=workers,
            caller=caller_name, start=True, retry_count=retry_count, reference_id=reference_id,
        )  # fmt: skip
        return self._woken(self.catalog.create_execution_with(request))

    def run_many(
        self,
        folder: str,
        project: str,
        package: str,
        count: int,
        *,
        parameters: Mapping[str, ParameterScalar] | None = None,
        workers: Sequence[str] = (),
        retry_count: int = 0,
        caller_name: str | None = None,
        reference_id: int | None = None,
        wake: bool = True,
    ) -> StartedMany:
        """``count`` executions of one package, created and started in one transaction
        (at most ``MAX_EXECUTIONS_PER_CALL``; a refusal leaves none behind), then one wake.
        Without ``parameters`` or ``workers`` they are written with one statement per
        table: the way to enqueue many at once."""
        if count < 1:
            raise OperationRefused(f"count must be at least 1, not {count}")
        request = _new_execution(
            folder, project, package, parameters=parameters, workers=workers,
            caller=caller_name, start=True, retry_count=retry_count, reference_id=reference_id,
        )  # fmt: skip
        ids = self.catalog.create_executions_with([request] * count)
        warning = self.wake() if wake else ""
        return StartedMany(ids, woken=wake and not warning, warning=warning)

    def rerun_execution(self, execution_id: int, *, caller: str | None = None) -> int:
        """Run ``execution_id`` again: a new execution of the same package (its project's
        current version) with the same parameter values, the same allowed workers and
        the same retry count, created and started in one transaction, then the master is
        woken. Sensitive values are copied encrypted. The new execution's id."""
        new_id = self.catalog.rerun_execution(execution_id, caller_name=caller)
        self.wake(new_id)
        return new_id

    def rotate_key(self, new_key_file: Path) -> int:
        """``scaleout catalog rotate-key``: a new catalog key re-encrypts every sensitive
        value in one transaction; the key file then holds only the new key. The number of
        values re-encrypted."""
        return rotate_catalog_key(self.catalog, new_key_file)

    def stop(self, execution_id: int, *, stopped_by: str | None = None) -> ExecutionRow:
        """Request a stop (SSIS ``stop_operation``); the execution as it is afterwards."""
        self.catalog.stop_operation(execution_id, stopped_by=stopped_by)
        self.wake(execution_id)
        return self.catalog.get_execution(execution_id)

    def execution(self, execution_id: int) -> ExecutionRow:
        return self.catalog.get_execution(execution_id)

    def executions(
        self,
        *,
        status: ExecutionStatus | None = None,
        limit: int = 100,
        where: ExecutionFilter | None = None,
    ) -> list[ExecutionRow]:
        """Executions, newest first; ``where`` narrows by folder, project, package and
        created time."""
        return self.catalog.list_executions(status=status, limit=limit, where=where)

    def execution_values(self, execution_id: int) -> list[ExecutionValueRow]:
        """The parameter values an execution runs with (sensitive ones None: never shown)."""
        self.catalog.get_execution(execution_id)  # NotFound for an unknown id
        return self.catalog.execution_values(execution_id)

    # -- browsing the catalog ------------------------------------------------------------

    def folders(self) -> list[FolderRow]:
        return self.catalog.list_folders()

    def folder(self, name: str) -> FolderRow:
        return self.catalog.get_folder(name)

    def projects(self, folder: str | None = None) -> list[ProjectRow]:
        return self.catalog.list_projects(folder)

    def project(self, folder: str, name: str) -> ProjectRow:
        """A project with its versions (newest first) and its parameters."""
        return self.catalog.get_project(folder, name)

    def packages(self, folder: str | None = None, project: str | None = None) -> list[PackageRow]:
        return self.catalog.list_packages(folder, project)

    def package(self, folder: str, project: str, name: str) -> PackageRow:
        """A package of the project's current version, with its parameters."""
        return self.catalog.get_package(folder, project, name)

    def wait(
        self,
        execution_id: int,
        timeout_s: float,
        *,
        poll_s: float = 0.25,
        on_poll: Callable[[ExecutionRow], None] | None = None,
    ) -> ExecutionRow:
        """Poll until the execution reaches a terminal status; :class:`WaitTimeout` after
        ``timeout_s``. ``on_poll`` sees every row read (the CLI prints progress from it)."""
        deadline = time.monotonic() + timeout_s
        while True:
            row = self.catalog.get_execution(execution_id)
            if on_poll is not None:
                on_poll(row)
            if row.status.is_terminal:
                return row
            if time.monotonic() >= deadline:
                msg = f"execution {execution_id} is still {row.status.label} after {timeout_s:g} s"
                hint = f"see `scaleout executions show {execution_id}`"
                raise WaitTimeout(msg, hint=hint, row=row)
            time.sleep(poll_s)

    def messages(
        self, execution_id: int, *, after_id: int = 0, limit: int = 1000
    ) -> list[MessageRow]:
        """The execution's operation and event messages after ``after_id`` in the order they
        were stored (by id), at most ``limit``."""
        self.catalog.get_execution(execution_id)  # NotFound for an unknown id
        return self.catalog.execution_messages(execution_id, after_id=after_id, limit=limit)

    def log(self, execution_id: int, *, page: int = MESSAGE_PAGE) -> Iterator[MessageRow]:
        """Every message stored so far, in time order (then by id), read a page at a time."""
        self.catalog.get_execution(execution_id)  # NotFound for an unknown id
        yield from self._log_up_to(execution_id, self.catalog.last_message_id(execution_id), page)

    def _log_up_to(self, execution_id: int, up_to_id: int, page: int) -> Iterator[MessageRow]:
        after: tuple[datetime, int] | None = None
        while True:
            batch = self.catalog.execution_messages_by_time(
                execution_id, after=after, up_to_id=up_to_id, limit=page
            )
            yield from batch
            if len(batch) < page:
                return
            after = (batch[-1].message_time, batch[-1].message_id)

    def feed(
        self, execution_id: int, *, after_id: int = 0, page: int = MESSAGE_PAGE
    ) -> MessageFeed:
        """New messages poll by poll (what ``--wait`` streams)."""
        return MessageFeed(self.catalog, execution_id, after_id=after_id, page=page)

    def follow(self, execution_id: int, *, poll_s: float = 0.5) -> Iterator[MessageRow]:
        """The messages so far in time order, then new ones as they arrive (each poll's in
        time order), until the execution has ended and none are left."""
        self.catalog.get_execution(execution_id)  # NotFound for an unknown id
        last = self.catalog.last_message_id(execution_id)
        yield from self._log_up_to(execution_id, last, MESSAGE_PAGE)
        feed = self.feed(execution_id, after_id=last)
        while True:
            ended = self.catalog.get_execution(execution_id).status.is_terminal
            batch = feed.poll()
            yield from batch
            if batch:
                continue
            if ended:
                return
            time.sleep(poll_s)

    def pending_facts(self, execution_id: int) -> PendingFacts:
        """What the dispatcher decides on for this execution; see :meth:`why_pending`."""
        return self.catalog.pending_facts(execution_id)

    def why_pending(self, execution_id: int) -> str:
        """Why the execution is still pending, with what to do; '' when it is not, or
        when nothing holds it back."""
        return explain(self.catalog.pending_facts(execution_id))

    # -- environments (SSIS's procedure names and parameters) ------------------------------

    def create_environment(self, folder: str, name: str, description: str = "") -> int:
        return self.catalog.create_environment(folder, name, description)

    def rename_environment(self, folder: str, name: str, new_name: str) -> None:
        self.catalog.rename_environment(folder, name, new_name)

    def delete_environment(self, folder: str, name: str) -> None:
        self.catalog.delete_environment(folder, name)

    def create_environment_variable(  # noqa: PLR0917  # SSIS's parameters, in SSIS's order
        self,
        folder: str,
        environment: str,
        name: str,
        data_type: str,
        sensitive: bool,
        value: ParameterScalar,
        description: str = "",
    ) -> None:
        """A typed variable (``string``, ``int``, ``float``, ``bool`` or SSIS's ``Int32``,
        ``Double``, ...); a sensitive one is stored encrypted."""
        self.catalog.create_environment_variable(
            folder, environment, name, data_type, sensitive, value, description
        )

    def set_environment_variable_value(
        self, folder: str, environment: str, name: str, value: ParameterScalar
    ) -> None:
        self.catalog.set_environment_variable_value(folder, environment, name, value)

    def delete_environment_variable(self, folder: str, environment: str, name: str) -> None:
        self.catalog.delete_environment_variable(folder, environment, name)

    def create_environment_reference(
        self,
        folder: str,
        project: str,
        environment: str,
        reference_type: str = "R",
        environment_folder: str | None = None,
    ) -> int:
        """'R': the environment in the project's folder; 'A': in ``environment_folder``.
        The reference's id, which ``create_execution(reference_id=...)`` takes."""
        return self.catalog.create_environment_reference(
            folder, project, environment, reference_type, environment_folder
        )

    def delete_environment_reference(self, reference_id: int) -> None:
        self.catalog.delete_environment_reference(reference_id)

    def set_object_parameter_value(  # noqa: PLR0917  # SSIS's parameters, in SSIS's order
        self,
        object_type: int,
        folder: str,
        project: str,
        parameter: str,
        value: ParameterScalar,
        object_name: str | None = None,
        value_type: str = "V",
    ) -> None:
        """A parameter's server value: ``value_type`` 'V', a literal; 'R', ``value`` is the
        name of the environment variable that gives it (with a reference)."""
        self.catalog.set_object_parameter_value(
            object_type, folder, project, parameter, value, object_name, value_type
        )

    def clear_object_parameter_value(
        self, folder: str, project: str, object_type: int, object_name: str | None, parameter: str
    ) -> None:
        self.catalog.clear_object_parameter_value(
            folder, project, object_type, object_name, parameter
        )

    def environments(self, folder: str | None = None) -> list[EnvironmentRow]:
        return self.catalog.list_environments(folder)

    def environment(self, folder: str, name: str) -> EnvironmentRow:
        """An environment with its variables (sensitive values None) and references."""
        return self.catalog.get_environment(folder, name)

    def environment_references(
        self, folder: str | None = None, project: str | None = None
    ) -> list[EnvironmentReferenceRow]:
        return self.catalog.list_environment_references(folder, project)

    # -- worker agents -------------------------------------------------------------------

    def add_worker(
        self,
        worker_agent_id: str,
        *,
        display_name: str = "",
        description: str = "",
        enabled: bool = False,
        max_task_count: int = 10,
    ) -> WorkerAgentRow:
        """Register a worker (Scale Out Manager's "+"); disabled unless ``enabled``."""
        self.catalog.add_worker_agent(
            worker_agent_id,
            display_name=display_name,
            description=description,
            is_enabled=False,
            max_task_count=max_task_count,
        )
        if enabled:
            self.catalog.enable_worker_agent(worker_agent_id)
        return self.catalog.get_worker_agent(worker_agent_id)

    def enable_worker(self, worker_agent_id: str) -> WorkerAgentRow:
        self.catalog.enable_worker_agent(worker_agent_id)
        self.wake(None)
        return self.catalog.get_worker_agent(worker_agent_id)

    def disable_worker(self, worker_agent_id: str) -> WorkerAgentRow:
        """Disable (drain) a worker: no new tasks; running ones finish."""
        self.catalog.disable_worker_agent(worker_agent_id)
        self.wake(None)
        return self.catalog.get_worker_agent(worker_agent_id)

    def set_worker(self, worker_agent_id: str, name: str, value: str) -> WorkerAgentRow:
        """Set DisplayName, Description or Tags (SSIS ``set_worker_agent_property``)."""
        self.catalog.set_worker_agent_property(worker_agent_id, name, value)
        return self.catalog.get_worker_agent(worker_agent_id)

    def delete_worker(self, worker_agent_id: str) -> None:
        self.catalog.delete_worker_agent(worker_agent_id)

    def worker(self, worker_agent_id: str) -> WorkerAgentRow:
        return self.catalog.get_worker_agent(worker_agent_id)

    def workers(self) -> list[WorkerAgentRow]:
        return self.catalog.list_worker_agents()

    def master_properties(self) -> dict[str, str]:
        return self.catalog.master_properties()

    def masters(self) -> list[MasterRow]:
        """Every master instance on this catalog; online means a heartbeat within three
        of the leader's MASTER_HEARTBEAT_INTERVALINMS (30 s when none is recorded)."""
        interval = self.catalog.master_properties().get("MASTER_HEARTBEAT_INTERVALINMS", "")
        interval_s = int(interval) / 1000 if interval.isdigit() and int(interval) else 30.0
        return self.catalog.list_masters(interval_s)

    def leader_lease(self) -> LeaderLease:
        return self.catalog.leader_lease()

    # -- the broker, best effort -----------------------------------------------------------

    def wake(self, execution_id: int | None = None) -> str:
        """Wake the master's dispatcher; '' when the broker confirmed, else a warning."""
        warning = self._on_broker(lambda publisher: publish_wake(publisher, execution_id))
        if warning:
            return f"could not wake the master ({warning}); it starts the work at its next poll"
        return ""

    def ensure_worker_queues(self, worker_agent_id: str) -> str:
        """Declare a worker's task and control queues (workers may not declare them);
        '' when done, else a warning. Needs the configure permission that the master and
        a local broker's guest have; elsewhere provisioning does it."""
        warning = self._on_broker(
            lambda publisher: declare_worker(publisher, worker_agent_id, with_master_topology=True)
        )
        if warning:
            return (
                f"could not declare the queues of {worker_agent_id} ({warning}); the master "
                "declares them when it starts, or use dispatcher.broker.provisioning"
            )
        return ""

    def _on_broker(self, call: Callable[[Publisher], None]) -> str:
        """Run ``call`` on the session's broker link (one connection, reused); at most
        BROKER_TIMEOUT_S, so a dead broker cannot stall the caller; '' or the reason."""
        if self._broker is None or self._link is None:
            return "no broker configured"
        if not self._link.connected and (refused := _refused(self._broker)):
            return refused
        reason = self._link.call(call)
        if reason:
            logger.warning("api.broker_failed", extra={"error": reason})
        return reason


def _new_execution(
    folder: str,
    project: str,
    package: str,
    *,
    parameters: Mapping[str, ParameterScalar] | None,
    workers: Sequence[str],
    caller: str | None,
    reference_id: int | None,
    start: bool = False,
    retry_count: int = 0,
) -> NewExecution:
    values = [(*split_parameter(name), value) for name, value in (parameters or {}).items()]
    return NewExecution(
        folder, project, package, parameters=values, workers=tuple(workers),
        caller_name=caller, start=start, retry_count=retry_count, reference_id=reference_id,
    )  # fmt: skip


def rotate_catalog_key(catalog: Catalog, key_file: Path) -> int:
    """Write a new key beside ``key_file``, re-encrypt everything with it in one
    transaction, then move it over ``key_file`` (atomic rename). A failure before the
    commit leaves the old key file and the catalog as they were."""
    pending = key_file.with_name(key_file.name + ".new")
    text = new_key_text()
    write_key_file(pending, [text], exclusive=False)
    try:
        rotated = catalog.rotate_key(Keyring([CatalogKey.parse(text, str(pending))]))
    except BaseException:
        pending.unlink(missing_ok=True)
        raise
    os.replace(pending, key_file)
    logger.info("api.key_rotated", extra={"values": rotated, "key_file": str(key_file)})
    return rotated


def read_archive(source: Path | bytes) -> bytes:
    """Archive bytes from bytes, a .zip file, or a project folder."""
    if isinstance(source, bytes):
        return source
    if source.is_dir():
        try:
            return build_archive(source)
        except ArchiveError as exc:
            msg = f"cannot deploy {source}: {exc}"
            raise OperationRefused(msg, hint="see the manifest format in the README") from exc
    try:
        return source.read_bytes()
    except FileNotFoundError:
        msg = f"{source} does not exist"
        raise ScaleoutError(msg, hint="give a project folder or a .zip archive") from None
    except OSError as exc:
        msg = f"cannot read {source}: {exc.strerror}"
        raise ScaleoutError(msg) from None


def _refused(broker: BrokerSettings) -> str:
    """'' when something listens at the broker's address; a port that refuses at once
    need not cost the caller the whole timeout."""
    parts = urlsplit(broker.url)
    port = parts.port or (5671 if broker.uses_tls else 5672)
    try:
        socket.create_connection((broker.host, port), timeout=BROKER_TIMEOUT_S).close()
    except OSError as exc:
        return f"{broker.host}:{port}: {exc.strerror or exc}"
    return ""
