"""The :class:`Catalog` facade: SSISDB's procedures and the master's operations.

Every method is one transaction on the catalog database; each delegates to the module
that owns its concern (procedures, workers, dispatching, reconcile, leases, reads), and
driver errors leave here as ``dispatcher.errors`` classes.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import TypeVar

from dispatcher.catalog import (
    browse,
    console,
    dispatching,
    environments,
    history,
    leadership,
    leases,
    migrate,
    pending,
    procedures,
    projects,
    reads,
    reconcile,
    sensitive,
    workers,
)
from dispatcher.catalog.engine import (
    Timing,
    Tx,
    create,
    create_sqlite_file,
    redact,
    sqlite_file,
    transaction,
    translated,
)
from dispatcher.catalog.records import (
    Assignment,
    AttemptRow,
    CancelOrder,
    CatalogCounts,
    CleanupResult,
    DeployResult,
    EnvironmentReferenceRow,
    EnvironmentRow,
    ExecutionFilter,
    ExecutionRow,
    ExecutionValueRow,
    ExpiredAttempt,
    FolderRow,
    HeartbeatResult,
    LeaderLease,
    MasterInstance,
    MasterRow,
    MessageRow,
    PackageRow,
    PendingFacts,
    ProjectRow,
    Refusal,
    ReportResult,
    WorkerAgentRow,
)
from dispatcher.keys import Keyring
from dispatcher.settings import MasterSettings
from schemas.messages import AgentHeartbeat, ParameterScalar, StatusReport
from schemas.states import ExecutionStatus

logger = logging.getLogger(__name__)

T = TypeVar("T")


class Catalog:
    """The SSISDB catalog on SQLite, PostgreSQL or SQL Server."""

    def __init__(
        self,
        url: str,
        *,
        connection_timeout_s: int,
        settings: Timing,
        keyring: Keyring | None = None,
    ) -> None:
        self._engine = create(url, connection_timeout_s=connection_timeout_s)
        self._timing = settings
        self._fence: tuple[str, int] | None = None
        """(master_id, epoch) while this handle writes as the leader: every write
        transaction checks it first (leadership.check_fence)."""
        self.keyring = keyring or Keyring(source="this catalog handle (opened without a key)")

    @classmethod
    def open(
        cls,
        url: str,
        *,
        connection_timeout_s: int = 15,
        worker_offline_after_s: float = 180.0,
        initial_lease_s: float = 300.0,
        keyring: Keyring | None = None,
    ) -> Catalog:
        """A catalog handle; connects lazily and creates nothing. ``keyring`` holds the
        catalog key(s) for sensitive values (none needed for a catalog without them)."""
        timing = Timing(worker_offline_after_s, initial_lease_s)
        return cls(url, connection_timeout_s=connection_timeout_s, settings=timing, keyring=keyring)

    @classmethod
    def for_master(cls, settings: MasterSettings) -> Catalog:
        """The catalog as the master's settings describe it: URL, timeout, lease and
        offline thresholds (one place, so the CLI, the API and the service agree)."""
        return cls.open(
            settings.catalog.url,
            connection_timeout_s=settings.catalog.connection_timeout_s,
            worker_offline_after_s=settings.worker_offline_after_s,
            initial_lease_s=settings.initial_lease_s,
            keyring=Keyring.from_settings(
                settings.catalog.key.get_secret_value() if settings.catalog.key else None,
                settings.catalog.key_file,
            ),
        )

    @property
    def dialect_name(self) -> str:
        return self._engine.dialect.name

    def init(self) -> None:
        """Create or upgrade the catalog to the newest revision; idempotent. A SQLite
        file is created here only: every other operation refuses a missing file."""
        create_sqlite_file(self._engine)
        with translated(self._engine), self._engine.begin() as conn:
            migrate.upgrade(conn)
            revision = migrate.current_revision(conn)
        logger.info(
            "catalog.upgraded", extra={"url": redact(self._engine.url), "revision": revision}
        )

    def schema_revision(self) -> str | None:
        path = sqlite_file(self._engine.url)
        if path is not None and not path.exists():
            return None  # reading the revision must not create the file
        with translated(self._engine), self._engine.connect() as conn:
            return migrate.current_revision(conn)

    def close(self) -> None:
        self._engine.dispose()

    @contextmanager
    def _tx(self) -> Iterator[Tx]:
        fence = self._fence
        with transaction(self._engine) as tx:
            if fence is not None:
                leadership.check_fence(tx, *fence)
            yield tx

    def _unfenced(self, operation: Callable[[Tx], T]) -> T:
        with transaction(self._engine) as tx:
            return operation(tx)

    # ---- several masters -------------------------------------------------------------

    def fence(self, master_id: str, epoch: int | None) -> None:
        """From now on every write of this handle is the leader's under ``epoch`` (None:
        no longer the leader; writes then raise NotLeader until fenced again)."""
        self._fence = (master_id, -1 if epoch is None else epoch)

    def announce_master(self, me: MasterInstance) -> None:
        self._unfenced(lambda tx: leadership.announce(tx, me))

    def master_restarted(self, master_id: str) -> None:
        self._unfenced(lambda tx: leadership.restarted(tx, master_id))

    def acquire_leadership(self, master_id: str, lease_s: float) -> int | None:
        return self._unfenced(lambda tx: leadership.acquire(tx, master_id, lease_s))

    def renew_leadership(self, master_id: str, epoch: int, lease_s: float) -> bool:
        return self._unfenced(lambda tx: leadership.renew(tx, master_id, epoch, lease_s))

    def release_leadership(self, master_id: str, epoch: int) -> None:
        self._unfenced(lambda tx: leadership.release(tx, master_id, epoch))

    def leader_lease(self) -> LeaderLease:
        return self._read(leadership.leader_lease)

    def list_masters(self, heartbeat_interval_s: float = 30.0) -> list[MasterRow]:
        return self._read(lambda tx: leadership.list_masters(tx, heartbeat_interval_s))

    def _run(self, operation: Callable[[Tx], T]) -> T:
        with self._tx() as tx:
            return operation(tx)

    def _read(self, operation: Callable[[Tx], T]) -> T:
        with transaction(self._engine, read_only=True) as tx:
            return operation(tx)

    # ---- SSIS stored procedures ------------------------------------------------------

    def create_folder(self, folder_name: str, folder_description: str = "") -> int:
        return self._run(lambda tx: projects.create_folder(tx, folder_name, folder_description))

    def deploy_project(
        self, folder_name: str, project_name: str, project_stream: bytes
    ) -> DeployResult:
        return self._run(
            lambda tx: projects.deploy_project(tx, folder_name, project_name, project_stream)
        )

    def create_execution(  # noqa: PLR0917  # SSIS's parameters, in SSIS's order
        self,
        folder_name: str,
        project_name: str,
        package_name: str,
        reference_id: int | None = None,
        use32bitruntime: bool = False,
        runinscaleout: bool | None = None,
        useanyworker: bool = True,
        *,
        caller_name: str | None = None,
    ) -> int:
        return self._run(
            lambda tx: procedures.create_execution(
                tx,
                self.keyring,
                folder_name=folder_name,
                project_name=project_name,
                package_name=package_name,
                reference_id=reference_id,
                use32bitruntime=use32bitruntime,
                runinscaleout=runinscaleout,
                useanyworker=useanyworker,
                caller_name=caller_name,
            )
        )

    def set_execution_parameter_value(
        self,
        execution_id: int,
        object_type: int,
        parameter_name: str,
        parameter_value: ParameterScalar,
    ) -> None:
        self._run(
            lambda tx: procedures.set_execution_parameter_value(
                tx, self.keyring, execution_id, object_type, parameter_name, parameter_value
            )
        )

    def create_execution_with(self, request: procedures.NewExecution) -> int:
        """An execution with its values and workers (and its start), in one transaction:
        a refusal anywhere writes nothing."""
        return self._run(lambda tx: procedures.create_execution_with(tx, self.keyring, request))

    def create_executions_with(self, requests: Sequence[procedures.NewExecution]) -> list[int]:
        """Many :meth:`create_execution_with` in one transaction (at most
        ``MAX_EXECUTIONS_PER_CALL``), ids in order: a refusal anywhere writes nothing."""
        return self._run(lambda tx: procedures.create_executions_with(tx, self.keyring, requests))

    def set_parameter_by_name(
        self, execution_id: int, object_type: int | None, name: str, value: ParameterScalar
    ) -> None:
        """``set_execution_parameter_value``; ``object_type`` None: package, then project."""
        self._run(
            lambda tx: procedures.set_parameter_by_name(
                tx, self.keyring, execution_id, object_type, name, value
            )
        )

    def rerun_execution(self, execution_id: int, *, caller_name: str | None = None) -> int:
        """A started copy of an execution (same package, values, workers, retries)."""
        return self._run(
            lambda tx: procedures.rerun_execution(tx, self.keyring, execution_id, caller_name)
        )

    def rotate_key(self, new: Keyring) -> int:
        """Re-encrypt every sensitive value with ``new``'s key (one transaction)."""
        return self._run(lambda tx: sensitive.rotate_key(tx, self.keyring, new))

    def add_execution_worker(self, execution_id: int, workeragent_id: str) -> None:
        self._run(lambda tx: procedures.add_execution_worker(tx, execution_id, workeragent_id))

    def start_execution(self, execution_id: int, retry_count: int = 0) -> None:
        self._run(lambda tx: procedures.start_execution(tx, execution_id, retry_count))

    def stop_operation(self, operation_id: int, *, stopped_by: str | None = None) -> None:
        self._run(lambda tx: leases.stop_operation(tx, operation_id, stopped_by))

    def add_worker_agent(
        self,
        worker_agent_id: str,
        *,
        display_name: str = "",
        description: str = "",
        is_enabled: bool = False,
        max_task_count: int = 10,
    ) -> None:
        agent = workers.NewAgent(
            worker_agent_id, display_name, description, is_enabled, max_task_count
        )
        self._run(lambda tx: workers.add_worker_agent(tx, agent))

    def enable_worker_agent(self, worker_agent_id: str) -> None:
        self._run(lambda tx: workers.set_enabled(tx, worker_agent_id, enabled=True))

    def disable_worker_agent(self, worker_agent_id: str) -> None:
        self._run(lambda tx: workers.disable_worker_agent(tx, worker_agent_id))

    def set_worker_agent_property(
        self, worker_agent_id: str, property_name: str, property_value: str
    ) -> None:
        self._run(
            lambda tx: workers.set_property(tx, worker_agent_id, property_name, property_value)
        )

    def delete_worker_agent(self, worker_agent_id: str) -> None:
        self._run(lambda tx: workers.delete_worker_agent(tx, worker_agent_id))

    def configure_catalog(self, property_name: str, property_value: str) -> None:
        self._run(lambda tx: workers.configure_catalog(tx, property_name, property_value))

    # ---- SSIS environments ------------------------------------------------------------

    def create_environment(
        self, folder_name: str, environment_name: str, environment_description: str = ""
    ) -> int:
        return self._run(
            lambda tx: environments.create_environment(
                tx, folder_name, environment_name, environment_description
            )
        )

    def rename_environment(
        self, folder_name: str, environment_name: str, new_environment_name: str
    ) -> None:
        self._run(
            lambda tx: environments.rename_environment(
                tx, folder_name, environment_name, new_environment_name
            )
        )

    def delete_environment(self, folder_name: str, environment_name: str) -> None:
        self._run(lambda tx: environments.delete_environment(tx, folder_name, environment_name))

    def create_environment_variable(  # noqa: PLR0917  # SSIS's parameters, in SSIS's order
        self,
        folder_name: str,
        environment_name: str,
        variable_name: str,
        data_type: str,
        sensitive: bool,
        value: ParameterScalar,
        description: str = "",
    ) -> None:
        self._run(
            lambda tx: environments.create_environment_variable(
                tx,
                self.keyring,
                folder_name,
                environment_name,
                variable_name,
                data_type,
                sensitive,
                value,
                description,
            )
        )

    def set_environment_variable_value(
        self, folder_name: str, environment_name: str, variable_name: str, value: ParameterScalar
    ) -> None:
        self._run(
            lambda tx: environments.set_environment_variable_value(
                tx, self.keyring, folder_name, environment_name, variable_name, value
            )
        )

    def delete_environment_variable(
        self, folder_name: str, environment_name: str, variable_name: str
    ) -> None:
        self._run(
            lambda tx: environments.delete_environment_variable(
                tx, folder_name, environment_name, variable_name
            )
        )

    def create_environment_reference(
        self,
        folder_name: str,
        project_name: str,
        environment_name: str,
        reference_type: str,
        environment_folder_name: str | None = None,
    ) -> int:
        return self._run(
            lambda tx: environments.create_environment_reference(
                tx,
                folder_name,
                project_name,
                environment_name,
                reference_type,
                environment_folder_name,
            )
        )

    def delete_environment_reference(self, reference_id: int) -> None:
        self._run(lambda tx: environments.delete_environment_reference(tx, reference_id))

    def set_object_parameter_value(  # noqa: PLR0917  # SSIS's parameters, in SSIS's order
        self,
        object_type: int,
        folder_name: str,
        project_name: str,
        parameter_name: str,
        parameter_value: ParameterScalar,
        object_name: str | None = None,
        value_type: str = "V",
    ) -> None:
        self._run(
            lambda tx: environments.set_object_parameter_value(
                tx,
                self.keyring,
                object_type,
                folder_name,
                project_name,
                parameter_name,
                parameter_value,
                object_name,
                value_type,
            )
        )

    def clear_object_parameter_value(
        self,
        folder_name: str,
        project_name: str,
        object_type: int,
        object_name: str | None,
        parameter_name: str,
    ) -> None:
        self._run(
            lambda tx: environments.clear_object_parameter_value(
                tx, folder_name, project_name, object_type, object_name, parameter_name
            )
        )

    def list_environments(self, folder_name: str | None = None) -> list[EnvironmentRow]:
        return self._read(lambda tx: environments.list_environments(tx, folder_name))

    def get_environment(self, folder_name: str, environment_name: str) -> EnvironmentRow:
        return self._read(
            lambda tx: environments.get_environment(tx, folder_name, environment_name)
        )

    def list_environment_references(
        self, folder_name: str | None = None, project_name: str | None = None
    ) -> list[EnvironmentReferenceRow]:
        return self._read(lambda tx: environments.list_references(tx, folder_name, project_name))

    # ---- reads ------------------------------------------------------------------------

    def get_execution(self, execution_id: int) -> ExecutionRow:
        return self._read(lambda tx: reads.get_execution(tx, execution_id))

    def list_executions(
        self,
        *,
        status: ExecutionStatus | None = None,
        limit: int = 100,
        where: ExecutionFilter | None = None,
    ) -> list[ExecutionRow]:
        return self._read(lambda tx: reads.list_executions(tx, status, limit, where))

    def execution_values(self, execution_id: int) -> list[ExecutionValueRow]:
        """The values an execution runs with; sensitive ones as None."""
        return self._read(lambda tx: browse.execution_values(tx, execution_id))

    def list_folders(self) -> list[FolderRow]:
        return self._read(browse.list_folders)

    def get_folder(self, folder_name: str) -> FolderRow:
        return self._read(lambda tx: browse.get_folder(tx, folder_name))

    def list_projects(self, folder_name: str | None = None) -> list[ProjectRow]:
        return self._read(lambda tx: browse.list_projects(tx, folder_name))

    def get_project(self, folder_name: str, project_name: str) -> ProjectRow:
        return self._read(lambda tx: browse.get_project(tx, folder_name, project_name))

    def list_packages(
        self, folder_name: str | None = None, project_name: str | None = None
    ) -> list[PackageRow]:
        return self._read(lambda tx: browse.list_packages(tx, folder_name, project_name))

    def get_package(self, folder_name: str, project_name: str, package_name: str) -> PackageRow:
        return self._read(
            lambda tx: browse.get_package(tx, folder_name, project_name, package_name)
        )

    def get_worker_agent(self, worker_agent_id: str) -> WorkerAgentRow:
        return self._read(lambda tx: reads.get_worker_agent(tx, self._timing, worker_agent_id))

    def list_worker_agents(self) -> list[WorkerAgentRow]:
        return self._read(lambda tx: reads.list_worker_agents(tx, self._timing))

    def execution_messages(
        self, execution_id: int, *, after_id: int = 0, limit: int = 1000
    ) -> list[MessageRow]:
        return self._read(lambda tx: reads.execution_messages(tx, execution_id, after_id, limit))

    def execution_messages_by_time(
        self,
        execution_id: int,
        *,
        after: reads.MessageKey | None = None,
        up_to_id: int | None = None,
        limit: int = 1000,
    ) -> list[MessageRow]:
        """One page in time order (then by id) after the (time, id) key ``after``."""
        return self._read(
            lambda tx: reads.execution_messages_by_time(tx, execution_id, after, up_to_id, limit)
        )

    def last_message_id(self, execution_id: int) -> int:
        return self._read(lambda tx: reads.last_message_id(tx, execution_id))

    def pending_facts(self, execution_id: int) -> PendingFacts:
        """What the dispatcher decides on for this execution (why it may stay pending)."""
        return self._read(lambda tx: pending.pending_facts(tx, self._timing, execution_id))

    def execution_attempts(self, execution_id: int) -> list[AttemptRow]:
        return self._read(lambda tx: reads.execution_attempts(tx, execution_id))

    def master_properties(self) -> dict[str, str]:
        return self._read(reads.master_properties)

    def project_archive(self, content_hash: str) -> bytes | None:
        return self._read(lambda tx: reads.project_archive(tx, content_hash))

    def counts(self) -> CatalogCounts:
        return self._read(lambda tx: reads.counts(tx, self._timing))

    def console(self) -> console.ConsoleReads:
        """The web console's reads (:mod:`dispatcher.catalog.console`)."""
        return console.ConsoleReads(self._read, self._timing)

    # ---- the master's operations ------------------------------------------------------

    def claim_tasks(
        self, limit: int, published: Sequence[tuple[uuid.UUID, int]] = ()
    ) -> list[Assignment]:
        """Flag ``published`` attempts (confirmed since the last claim), then claim."""

        def claim(tx: Tx) -> list[Assignment]:
            dispatching.mark_published(tx, published)
            return dispatching.claim_tasks(tx, self._timing, limit, self.keyring)

        return self._run(claim)

    def mark_published(self, attempts: Sequence[tuple[uuid.UUID, int]]) -> None:
        self._run(lambda tx: dispatching.mark_published(tx, attempts))

    def unpublished_assignments(self, older_than_s: float) -> list[Assignment]:
        return self._read(
            lambda tx: dispatching.unpublished_assignments(tx, self.keyring, older_than_s)
        )

    def apply_status_reports(
        self, reports: Sequence[tuple[StatusReport, str]]
    ) -> list[ReportResult]:
        return self._run(lambda tx: reconcile.apply_status_reports(tx, reports))

    def record_heartbeat(self, heartbeat: AgentHeartbeat, sender: str) -> HeartbeatResult:
        return self._run(lambda tx: leases.record_heartbeat(tx, heartbeat, sender))

    def record_heartbeats(
        self, beats: Sequence[tuple[AgentHeartbeat, str]]
    ) -> list[HeartbeatResult]:
        """Several heartbeats in one transaction, one result each in order. They are
        recorded in worker order, so that concurrent batches take their locks alike."""

        def record(tx: Tx) -> list[HeartbeatResult]:
            order = sorted(range(len(beats)), key=lambda i: beats[i][1])
            results = {i: leases.record_heartbeat(tx, *beats[i]) for i in order}
            return [results[i] for i in range(len(beats))]

        return self._run(record)

    def pending_cancels(self) -> list[CancelOrder]:
        return self._read(leases.pending_cancels)

    def mark_cancels_sent(self, orders: Sequence[CancelOrder]) -> None:
        self._run(lambda tx: leases.mark_cancels_sent(tx, orders))

    def expire_leases(self, as_of: datetime | None = None) -> list[ExpiredAttempt]:
        return self._run(lambda tx: leases.expire_leases(tx, as_of))

    def database_now(self) -> datetime:
        """The database's clock, which every lease is written and judged by."""
        return self._run(lambda tx: tx.now)

    def record_refusals(self, refusals: Sequence[Refusal]) -> None:
        """The latest refused message of each worker, on its row (one transaction)."""
        self._run(lambda tx: workers.record_refusals(tx, refusals))

    def master_heartbeat(self, properties: Mapping[str, str]) -> None:
        self._run(lambda tx: workers.master_heartbeat(tx, properties))

    def cleanup_completed_jobs(self, minutes_to_keep: int = 60) -> CleanupResult:
        return history.cleanup_completed_jobs(self._tx, minutes_to_keep)
