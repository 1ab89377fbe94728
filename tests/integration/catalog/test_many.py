"""create_executions_with on both databases: many executions in one transaction write the
rows the same requests one at a time write, in the requests' order, and a refusal
anywhere in the batch writes nothing."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import pytest
import sqlalchemy as sa

from dispatcher.api import ScaleOut
from dispatcher.catalog import Catalog
from dispatcher.catalog.procedures import MAX_EXECUTIONS_PER_CALL, NewExecution
from dispatcher.catalog.tables import tables_for
from dispatcher.errors import NotFound, OperationRefused
from schemas.states import ExecutionStatus
from tests.fixtures.catalog import online_worker, project_archive
from tests.integration.catalog.test_environments import PACKAGES, PROJECT_PARAMETERS
from tests.integration.catalog.test_procedures import assert_refused_without_rows

TABLES = ("operations", "executions", "jobs", "execution_parameter_values", "tasks")
GENERATED = {"operation_id", "execution_id", "job_id", "task_id", "parameter_id"}


@pytest.fixture
def so(catalog: Catalog) -> ScaleOut:
    """Finance/Sales (defaults, a server value, a referenced variable) and a PROD environment."""
    archive = project_archive("Sales", packages=PACKAGES, parameters=PROJECT_PARAMETERS)
    catalog.deploy_project("Finance", "Sales", archive)
    online_worker(catalog, "w1")
    api = ScaleOut(catalog)
    api.create_environment("Finance", "PROD")
    api.create_environment_variable("Finance", "PROD", "Srv", "String", False, "prod-db")
    api.create_environment_variable("Finance", "PROD", "Rate", "Double", False, "2.5")
    api.create_environment_variable("Finance", "PROD", "Secret", "string", True, "s3cret")
    api.set_object_parameter_value(20, "Finance", "Sales", "Server", "Srv", value_type="R")
    api.set_object_parameter_value(30, "Finance", "Sales", "Rate", "Rate", "Load", "R")
    api.set_object_parameter_value(30, "Finance", "Sales", "Token", "Secret", "Load", "R")
    api.set_object_parameter_value(20, "Finance", "Sales", "Currency", "USD")
    return api


@pytest.fixture
def prod(so: ScaleOut) -> int:
    """A reference of Finance/Sales to PROD, which every start without values needs."""
    return so.create_environment_reference("Finance", "Sales", "PROD", "R")


def rows_of(url: str, execution_id: int) -> dict[str, list[dict[str, Any]]]:
    """The execution's rows in every table it writes, less what is generated per row
    (ids, uuids, times), read with a plain engine."""
    engine = sa.create_engine(url)
    t = tables_for(engine.dialect.name)
    found: dict[str, list[dict[str, Any]]] = {}
    with engine.connect() as conn:
        for name in TABLES:
            table = getattr(t, name)
            key = table.c.operation_id if name == "operations" else table.c.execution_id
            query = sa.select(table).where(key == execution_id)
            found[name] = sorted(
                (_kept(row._asdict()) for row in conn.execute(query)),
                key=lambda row: sorted(map(str, row.items())),
            )
    engine.dispose()
    return found


def _kept(row: dict[str, Any]) -> dict[str, Any]:
    return {
        column: value
        for column, value in row.items()
        if column not in GENERATED and not isinstance(value, datetime | uuid.UUID)
    }


def test_a_batch_writes_what_one_at_a_time_writes(
    catalog: Catalog, catalog_url: str, prod: int
) -> None:
    """Started and created-only requests, with a reference: every row alike, ids in
    order, each started task claimable."""
    started = NewExecution("Finance", "Sales", "Load", start=True, reference_id=prod)
    created = NewExecution("Finance", "Sales", "Load", reference_id=prod, caller_name="me")
    one_started = catalog.create_execution_with(started)
    one_created = catalog.create_execution_with(created)

    ids = catalog.create_executions_with([started] * 3 + [created] * 2 + [started])

    assert ids == sorted(ids)
    assert len(set(ids)) == 6
    assert ids[0] > one_created
    for execution_id in ids[:3] + ids[5:]:
        assert rows_of(catalog_url, execution_id) == rows_of(catalog_url, one_started)
    for execution_id in ids[3:5]:
        assert rows_of(catalog_url, execution_id) == rows_of(catalog_url, one_created)
    assert rows_of(catalog_url, ids[0])["execution_parameter_values"]  # values were written
    claimed = {a.execution_id for a in catalog.claim_tasks(20)}
    assert claimed == {one_started, *ids[:3], ids[5]}


def test_requests_with_their_own_values_and_workers_keep_their_place(
    catalog: Catalog, prod: int
) -> None:
    """Requests that set values or workers are written one at a time between the alike."""
    plain = NewExecution("Finance", "Sales", "Other", start=True, reference_id=prod)
    valued = NewExecution(
        "Finance", "Sales", "Load", parameters=((None, "Rate", 7), (None, "Server", "x"),
        (None, "Token", "t")), start=True,
    )  # fmt: skip
    pinned = NewExecution("Finance", "Sales", "Other", workers=("w1",))

    ids = catalog.create_executions_with([plain, valued, plain, pinned, plain])

    assert ids == sorted(ids)
    statuses = [catalog.get_execution(i).status for i in ids]
    pending, created = ExecutionStatus.PENDING, ExecutionStatus.CREATED
    assert statuses == [pending, pending, pending, created, pending]
    assert catalog.create_executions_with([]) == []


@pytest.mark.parametrize(
    ("case", "error"),
    [
        ("unknown package", NotFound),
        ("missing required value", OperationRefused),
        ("negative retry count", OperationRefused),
        ("too many", OperationRefused),
    ],
)
def test_a_refusal_anywhere_writes_nothing(
    catalog: Catalog, catalog_url: str, prod: int, case: str, error: type[Exception]
) -> None:
    """The batch is one transaction: the refused request rolls back those before it."""
    good = NewExecution("Finance", "Sales", "Other", start=True, reference_id=prod)
    bad = {
        "unknown package": [NewExecution("Finance", "Sales", "Nope", start=True)],
        # Token takes its value from an environment, and this start has no reference.
        "missing required value": [NewExecution("Finance", "Sales", "Load", start=True)],
        "negative retry count": [
            NewExecution("Finance", "Sales", "Other", start=True, retry_count=-1)
        ],
        "too many": [good] * MAX_EXECUTIONS_PER_CALL,
    }[case]
    info = assert_refused_without_rows(
        catalog_url, lambda: catalog.create_executions_with([good, good, *bad]), error
    )
    if case == "too many":
        assert f"more than {MAX_EXECUTIONS_PER_CALL}" in str(info.value)
        assert "split" in getattr(info.value, "hint", "")


def test_run_many_starts_them_and_reports_each(so: ScaleOut, catalog: Catalog, prod: int) -> None:
    """ScaleOut.run_many: ``count`` started executions of one package, ids in order."""
    started = so.run_many("Finance", "Sales", "Other", 5, reference_id=prod, wake=False)
    ids = started.execution_ids
    assert len(ids) == 5
    assert not started.woken
    assert ids == sorted(ids)
    assert {catalog.get_execution(i).status for i in ids} == {ExecutionStatus.PENDING}
    with pytest.raises(OperationRefused, match="at least 1"):
        so.run_many("Finance", "Sales", "Other", 0, wake=False)
