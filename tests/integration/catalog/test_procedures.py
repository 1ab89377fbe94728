"""SSIS procedures on both databases: effects, and refusals that leave no rows behind."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from dispatcher.catalog import Catalog
from dispatcher.errors import NotFound, OperationRefused
from schemas.states import ExecutionStatus, TaskState
from tests.fixtures.catalog import (
    deploy_sample,
    online_worker,
    project_archive,
    started_execution,
    table_counts,
)


def assert_refused_without_rows(
    url: str, call: Callable[[], object], error: type[Exception] = OperationRefused
) -> pytest.ExceptionInfo[Exception]:
    before = table_counts(url)
    with pytest.raises(error) as info:
        call()
    assert table_counts(url) == before
    return info


def test_create_folder_and_refuse_duplicate(catalog: Catalog, catalog_url: str) -> None:
    """A folder is created once; creating it again is refused and writes nothing."""
    folder_id = catalog.create_folder("Finance", "money")

    assert folder_id > 0
    assert_refused_without_rows(catalog_url, lambda: catalog.create_folder("Finance"))


def test_deploy_creates_versions_and_dedupes_same_content(
    catalog: Catalog, catalog_url: str
) -> None:
    """Same bytes again -> created=False, same lsn, no rows; new bytes -> a newer lsn."""
    first = catalog.deploy_project("Finance", "Sales", project_archive())
    before = table_counts(catalog_url)
    again = catalog.deploy_project("Finance", "Sales", project_archive())
    after_again = table_counts(catalog_url)
    newer = catalog.deploy_project("Finance", "Sales", project_archive(extra="  # v2"))

    assert first.created
    assert (again.created, again.project_lsn, again.content_hash) == (
        False,
        first.project_lsn,
        first.content_hash,
    )
    assert after_again == before
    assert newer.created
    assert newer.project_lsn > first.project_lsn
    assert catalog.project_archive(first.content_hash) == project_archive()
    assert catalog.project_archive("0" * 64) is None


@pytest.mark.parametrize("archive", [b"not a zip", project_archive(packages=[{"name": "NoEntry"}])])
def test_deploy_refuses_bad_archive(catalog: Catalog, catalog_url: str, archive: bytes) -> None:
    """A broken archive is refused with the reason, and not even its folder is created."""
    info = assert_refused_without_rows(
        catalog_url, lambda: catalog.deploy_project("Finance", "Sales", archive)
    )

    assert "cannot deploy project 'Sales'" in str(info.value)


def test_create_execution_defaults(catalog: Catalog) -> None:
    """A new execution is created (1), in Scale Out, any worker, with the project's lsn."""
    deploy_sample(catalog)
    execution_id = catalog.create_execution("Finance", "Sales", "Load", caller_name="ann")

    row = catalog.get_execution(execution_id)
    assert row.status is ExecutionStatus.CREATED
    assert (row.runinscaleout, row.useanyworker, row.use32bitruntime) == (True, True, False)
    assert row.caller_name == "ann"
    assert row.project_lsn is not None
    assert row.task_id is None


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (("Nope", "Sales", "Load"), NotFound),
        (("Finance", "Nope", "Load"), NotFound),
        (("Finance", "Sales", "Nope"), NotFound),
    ],
)
def test_create_execution_refuses_unknown_objects(
    catalog: Catalog, catalog_url: str, args: tuple[str, str, str], error: type[Exception]
) -> None:
    """Unknown folder, project or package -> NotFound, nothing written."""
    deploy_sample(catalog)

    assert_refused_without_rows(catalog_url, lambda: catalog.create_execution(*args), error)


def test_create_execution_refuses_server_mode(catalog: Catalog, catalog_url: str) -> None:
    """runinscaleout=False, or unset with DEFAULT_EXECUTION_MODE 0, is refused."""
    deploy_sample(catalog)
    info = assert_refused_without_rows(
        catalog_url,
        lambda: catalog.create_execution("Finance", "Sales", "Load", runinscaleout=False),
    )
    catalog.configure_catalog("DEFAULT_EXECUTION_MODE", "0")
    assert_refused_without_rows(
        catalog_url, lambda: catalog.create_execution("Finance", "Sales", "Load")
    )

    assert "Scale Out only" in str(info.value)


def test_create_execution_refuses_environment_reference(catalog: Catalog, catalog_url: str) -> None:
    """An environment reference that does not exist is refused."""
    deploy_sample(catalog)

    assert_refused_without_rows(
        catalog_url, lambda: catalog.create_execution("Finance", "Sales", "Load", 7), NotFound
    )


def test_parameter_values_are_coerced_and_overwritten(catalog: Catalog) -> None:
    """A value is coerced to the declared type; setting it twice keeps the last."""
    online_worker(catalog, "w1")
    deploy_sample(catalog)
    execution_id = catalog.create_execution("Finance", "Sales", "Load")
    catalog.set_execution_parameter_value(execution_id, 30, "Rows", "5")
    catalog.set_execution_parameter_value(execution_id, 30, "Rows", 7)
    catalog.set_execution_parameter_value(execution_id, 30, "ApiKey", "s3cret")
    catalog.set_execution_parameter_value(execution_id, 50, "LOGGING_LEVEL", "3")
    catalog.start_execution(execution_id)

    [assignment] = catalog.claim_tasks(5)
    values = {(p.object_type, p.name): (p.value, p.sensitive) for p in assignment.parameters}
    assert values == {
        (30, "Rows"): (7, False),
        (30, "ApiKey"): ("s3cret", True),
        (50, "LOGGING_LEVEL"): (3, False),
    }


@pytest.mark.parametrize(
    ("object_type", "name", "value", "error"),
    [
        (30, "Rows", "many", OperationRefused),
        (30, "Nope", 1, NotFound),
        (20, "Rows", 1, NotFound),
        (40, "Rows", 1, OperationRefused),
        (50, "NOT_A_SYSTEM_PARAMETER", 1, NotFound),
    ],
)
def test_parameter_value_refusals(
    catalog: Catalog,
    catalog_url: str,
    object_type: int,
    name: str,
    value: object,
    error: type[Exception],
) -> None:
    """Wrong type, undeclared name or unknown object type -> refused, no rows."""
    deploy_sample(catalog)
    execution_id = catalog.create_execution("Finance", "Sales", "Load")

    assert_refused_without_rows(
        catalog_url,
        lambda: catalog.set_execution_parameter_value(execution_id, object_type, name, value),  # type: ignore[arg-type]
        error,
    )


def test_parameter_refused_after_start_and_for_unknown_execution(
    catalog: Catalog, catalog_url: str
) -> None:
    """Values cannot change after start, nor be set on an unknown execution."""
    execution_id = started_execution(catalog)

    assert_refused_without_rows(
        catalog_url, lambda: catalog.set_execution_parameter_value(execution_id, 30, "Rows", 1)
    )
    assert_refused_without_rows(
        catalog_url, lambda: catalog.set_execution_parameter_value(999, 30, "Rows", 1), NotFound
    )


def test_add_execution_worker(catalog: Catalog, catalog_url: str) -> None:
    """Workers are added once (idempotent); refused for any-worker, unknown worker or id."""
    online_worker(catalog, "w1")
    deploy_sample(catalog)
    any_worker = catalog.create_execution("Finance", "Sales", "Load")
    chosen = catalog.create_execution("Finance", "Sales", "Load", useanyworker=False)
    catalog.add_execution_worker(chosen, "w1")
    catalog.add_execution_worker(chosen, "w1")

    assert catalog.get_execution(chosen).allowed_workers == ("w1",)
    info = assert_refused_without_rows(
        catalog_url, lambda: catalog.add_execution_worker(any_worker, "w1")
    )
    assert info.value.code == 27251  # type: ignore[attr-defined]
    assert_refused_without_rows(
        catalog_url, lambda: catalog.add_execution_worker(chosen, "ghost"), NotFound
    )
    assert_refused_without_rows(
        catalog_url, lambda: catalog.add_execution_worker(999, "w1"), NotFound
    )


def test_start_execution_creates_pending_task(catalog: Catalog) -> None:
    """start -> execution 5, task pending, attempt 0, max attempts = retry_count + 1."""
    execution_id = started_execution(catalog, retry_count=2)

    row = catalog.get_execution(execution_id)
    assert row.status is ExecutionStatus.PENDING
    assert (row.task_state, row.attempt, row.executed_count) == (TaskState.PENDING, 0, 0)
    assert row.max_executed_count == 3


def test_start_execution_refusals(catalog: Catalog, catalog_url: str) -> None:
    """Starting twice, a negative retry_count, or an unknown id is refused."""
    execution_id = started_execution(catalog)
    fresh = catalog.create_execution("Finance", "Sales", "Load")

    info = assert_refused_without_rows(catalog_url, lambda: catalog.start_execution(execution_id))
    assert "already started" in str(info.value)
    assert_refused_without_rows(catalog_url, lambda: catalog.start_execution(fresh, retry_count=-1))
    assert_refused_without_rows(catalog_url, lambda: catalog.start_execution(999), NotFound)


def test_start_refuses_missing_required_parameter(catalog: Catalog, catalog_url: str) -> None:
    """A required parameter without value or default blocks the start until it is set."""
    packages = [
        {
            "name": "Load",
            "entry": {"callable": "etl:main"},
            "parameters": [{"name": "Region", "required": True}],
        }
    ]
    catalog.deploy_project("Finance", "Sales", project_archive(packages=packages))
    execution_id = catalog.create_execution("Finance", "Sales", "Load")

    info = assert_refused_without_rows(catalog_url, lambda: catalog.start_execution(execution_id))
    assert "Region" in str(info.value)
    catalog.set_execution_parameter_value(execution_id, 30, "Region", "emea")
    catalog.start_execution(execution_id)
    assert catalog.get_execution(execution_id).status is ExecutionStatus.PENDING


def test_worker_agent_administration(catalog: Catalog, catalog_url: str) -> None:
    """Add, set properties, enable/disable and delete; bad names and duplicates refused."""
    catalog.add_worker_agent("w9", display_name="Nine", max_task_count=3)
    catalog.set_worker_agent_property("w9", "Tags", "etl,big")
    catalog.set_worker_agent_property("w9", "Description", "night shift")
    catalog.enable_worker_agent("w9")

    row = catalog.get_worker_agent("w9")
    assert (row.display_name, row.tags, row.description, row.is_enabled) == (
        "Nine",
        "etl,big",
        "night shift",
        True,
    )
    assert (row.max_task_count, row.is_online) == (3, False)
    assert_refused_without_rows(catalog_url, lambda: catalog.add_worker_agent("w9"))
    assert_refused_without_rows(
        catalog_url, lambda: catalog.set_worker_agent_property("w9", "MachineName", "x")
    )
    assert_refused_without_rows(catalog_url, lambda: catalog.enable_worker_agent("ghost"), NotFound)
    assert_refused_without_rows(
        catalog_url, lambda: catalog.disable_worker_agent("ghost"), NotFound
    )
    assert_refused_without_rows(catalog_url, lambda: catalog.delete_worker_agent("ghost"), NotFound)
    catalog.delete_worker_agent("w9")
    with pytest.raises(NotFound):
        catalog.get_worker_agent("w9")


def test_delete_refused_while_worker_holds_tasks(catalog: Catalog, catalog_url: str) -> None:
    """A worker holding a leased task cannot be deleted; the hint says to disable it."""
    online_worker(catalog, "w1")
    started_execution(catalog)
    catalog.claim_tasks(1)

    info = assert_refused_without_rows(catalog_url, lambda: catalog.delete_worker_agent("w1"))
    assert "disable" in info.value.hint  # type: ignore[attr-defined]


def test_configure_catalog_refuses_unknown_property(catalog: Catalog, catalog_url: str) -> None:
    """Unknown properties and invalid values are refused."""
    assert_refused_without_rows(catalog_url, lambda: catalog.configure_catalog("NOPE", "1"))
    assert_refused_without_rows(
        catalog_url, lambda: catalog.configure_catalog("DEFAULT_EXECUTION_MODE", "2")
    )


def test_list_executions_newest_first_with_filter(catalog: Catalog) -> None:
    """list_executions returns newest first and filters by status."""
    started = started_execution(catalog)
    created = catalog.create_execution("Finance", "Sales", "Load")

    assert [r.execution_id for r in catalog.list_executions()] == [created, started]
    assert [r.execution_id for r in catalog.list_executions(status=ExecutionStatus.PENDING)] == [
        started
    ]
    assert len(catalog.list_executions(limit=1)) == 1
