"""Browsing reads on both databases: folders, projects with their versions, packages and
parameters with where each value comes from, an execution's values (sensitive ones never
read out), and the list filters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dispatcher.api import ScaleOut
from dispatcher.catalog import Catalog
from dispatcher.catalog.records import ExecutionFilter
from dispatcher.errors import NotFound
from tests.fixtures.catalog import project_archive


@pytest.fixture
def so(catalog: Catalog) -> ScaleOut:
    catalog.deploy_project("Finance", "Sales", project_archive("Sales"))
    catalog.deploy_project("Finance", "Sales", project_archive("Sales", extra="  # v2"))
    catalog.deploy_project("Ops", "Other", project_archive("Other"))
    return ScaleOut(catalog)


def test_folders_projects_versions_and_parameters(so: ScaleOut) -> None:
    so.set_object_parameter_value(30, "Finance", "Sales", "Rows", 99, "Load")
    so.set_object_parameter_value(30, "Finance", "Sales", "ApiKey", "Key", "Load", "R")

    folders = {f.name: (f.projects, f.environments) for f in so.folders()}
    project = so.project("Finance", "Sales")
    package = so.package("Finance", "Sales", "Load")

    assert folders == {"Finance": (1, 0), "Ops": (1, 0)}
    assert [(v.project_lsn, v.current) for v in project.versions] == [
        (project.project_lsn, True),
        (project.versions[1].project_lsn, False),
    ]
    assert project.packages == ("Load",)
    params = {p.name: p for p in package.parameters}
    assert (params["Rows"].source, params["Rows"].server_value) == ("server", 99)
    assert params["Rows"].design_default_value == 10
    assert (params["ApiKey"].source, params["ApiKey"].referenced_variable_name) == (
        "environment",
        "Key",
    )
    assert params["ApiKey"].sensitive
    assert [p.name for p in so.packages("Ops")] == ["Load"]
    assert [p.name for p in so.projects()] == ["Sales", "Other"]
    with pytest.raises(NotFound, match="folder 'Nope'"):
        so.folder("Nope")
    with pytest.raises(NotFound, match="project 'Nope'"):
        so.project("Finance", "Nope")


def test_execution_values_mask_sensitive_ones(so: ScaleOut) -> None:
    execution_id = so.create_execution(
        "Finance", "Sales", "Load", parameters={"ApiKey": "mask-me", "Rows": 3}
    )

    values = {
        (v.object_type, v.name): (v.value, v.sensitive) for v in so.execution_values(execution_id)
    }

    assert values == {(30, "ApiKey"): (None, True), (30, "Rows"): (3, False)}
    with pytest.raises(NotFound):
        so.execution_values(999)


def test_list_filters_by_names_and_created_time(so: ScaleOut) -> None:
    sales = so.create_execution("Finance", "Sales", "Load")
    other = so.create_execution("Ops", "Other", "Load")
    now = datetime.now(UTC)

    def ids(**where: object) -> list[int]:
        return [r.execution_id for r in so.executions(where=ExecutionFilter(**where))]  # type: ignore[arg-type]

    assert ids() == [other, sales]
    assert ids(folder="Finance") == [sales]
    assert ids(project="Other", package="Load") == [other]
    assert ids(package="Nope") == []
    assert ids(created_after=now - timedelta(hours=1)) == [other, sales]
    assert ids(created_after=now + timedelta(hours=1)) == []
    assert ids(created_before=now - timedelta(hours=1)) == []
