"""Every refused create (values, workers, start), deploy and worker registration leaves no
row behind, on both databases: row counts before and after are equal."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest

from dispatcher.api import ScaleOut
from dispatcher.catalog import Catalog
from dispatcher.errors import CatalogKeyMissing, NotFound, OperationRefused
from schemas.messages import ParameterScalar
from tests.fixtures.catalog import online_worker, project_archive, table_counts

PROJECT_PARAMETERS = [{"name": "Currency", "type": "string", "default": "EUR"}]
PACKAGES = [
    {
        "name": "Load",
        "entry": {"argv": ["{python}", "load.py"]},
        "parameters": [
            {"name": "Rows", "type": "int", "default": 10},
            {"name": "Seconds", "type": "float", "required": True},
            {"name": "ApiKey", "type": "string", "sensitive": True},
        ],
    }
]


@pytest.fixture
def so(catalog: Catalog) -> ScaleOut:
    catalog.deploy_project(
        "Finance",
        "Sales",
        project_archive("Sales", packages=PACKAGES, parameters=PROJECT_PARAMETERS),
    )
    online_worker(catalog, "w1")
    return ScaleOut(catalog)


@pytest.mark.parametrize(
    ("parameters", "workers", "error", "said"),
    [
        ({"Nope": 1}, (), NotFound, "declared neither by the package nor the project"),
        ({"Rows": "many"}, (), OperationRefused, "takes a int, not 'many'"),
        ({"$Package::Rows": "many"}, (), OperationRefused, "takes a int"),
        ({"$Package::Currency": "USD"}, (), NotFound, "it is a project parameter"),
        ({"$Project::Rows": 3}, (), NotFound, "it is a package parameter"),
        ({"$ServerOption::NOPE": 3}, (), NotFound, "not a system parameter"),
        ({"Rows": 3}, ("w1", "ghost"), NotFound, "worker agent 'ghost' does not exist"),
    ],
)
def test_a_refused_create_leaves_no_row(
    so: ScaleOut,
    catalog_url: str,
    parameters: Mapping[str, ParameterScalar],
    workers: Sequence[str],
    error: type[Exception],
    said: str,
) -> None:
    """Values and workers are written with the execution in one transaction: the refusal
    of the last of them takes the execution, its job and its earlier values back too."""
    before = table_counts(catalog_url)

    with pytest.raises(error, match=said):
        so.create_execution("Finance", "Sales", "Load", parameters=parameters, workers=workers)

    assert table_counts(catalog_url) == before


def test_a_refused_start_in_run_leaves_no_execution(so: ScaleOut, catalog_url: str) -> None:
    """create --start: a missing required parameter refuses the start, and the execution
    created in the same transaction goes too; the message names the parameter."""
    before = table_counts(catalog_url)

    with pytest.raises(OperationRefused, match="Load lacks required parameters: Seconds") as info:
        so.run("Finance", "Sales", "Load", parameters={"Rows": 3})

    assert "--param Seconds=" in info.value.hint
    assert table_counts(catalog_url) == before
    with pytest.raises(OperationRefused, match="retry_count must be 0 or more"):
        so.run("Finance", "Sales", "Load", parameters={"Seconds": 1}, retry_count=-1)
    assert table_counts(catalog_url) == before


def test_a_sensitive_value_without_a_key_is_refused_and_writes_nothing(
    so: ScaleOut, catalog_url: str
) -> None:
    keyless = ScaleOut(Catalog.open(catalog_url))
    before = table_counts(catalog_url)

    with pytest.raises(CatalogKeyMissing, match="has no catalog key") as info:
        keyless.create_execution(
            "Finance", "Sales", "Load", parameters={"Rows": 1, "ApiKey": "pssst"}
        )

    assert "SCALEOUT_CATALOG__KEY_FILE" in info.value.hint
    assert "pssst" not in str(info.value)
    assert table_counts(catalog_url) == before
    keyless.close()


def test_a_sensitive_value_of_the_wrong_type_is_not_echoed(so: ScaleOut) -> None:
    archive = project_archive(
        "Secret",
        packages=[
            {
                "name": "Run",
                "entry": {"argv": ["{python}", "run.py"]},
                "parameters": [{"name": "Pin", "type": "int", "sensitive": True}],
            }
        ],
    )
    so.catalog.deploy_project("Finance", "Secret", archive)

    with pytest.raises(OperationRefused) as info:
        so.create_execution("Finance", "Secret", "Run", parameters={"Pin": "hunter2"})

    assert "Pin takes a int" in str(info.value)
    assert "hunter2" not in str(info.value)


def test_success_writes_all_of_it(so: ScaleOut, catalog_url: str) -> None:
    """The same path, accepted: the execution, its values and its worker are there."""
    execution_id = so.create_execution(
        "Finance", "Sales", "Load", parameters={"Rows": "4", "Currency": "USD"}, workers=["w1"]
    )

    row = so.execution(execution_id)
    assert row.allowed_workers == ("w1",)
    assert table_counts(catalog_url)[_name(catalog_url, "execution_parameter_values")] == 2


@pytest.mark.parametrize(
    ("parameter", "said"),
    [
        ({"name": "Rate", "type": "float", "default": "x"}, "Rate is a float, and its default 'x'"),
        ({"name": "Rows", "type": "int", "default": 1.5}, "Rows is a int, and its default 1.5"),
        ({"name": "On", "type": "bool", "default": "maybe"}, "On is a bool"),
        (
            {"name": "Token", "type": "string", "default": "t", "sensitive": True},
            "sensitive parameter Token has a default",
        ),
    ],
)
def test_deploy_refuses_defaults_that_do_not_fit(
    catalog: Catalog, catalog_url: str, parameter: dict[str, object], said: str
) -> None:
    """On a package's parameter and on a project's alike; nothing is written."""
    on_package = project_archive(
        "Bad",
        packages=[
            {"name": "Run", "entry": {"argv": ["{python}", "run.py"]}, "parameters": [parameter]}
        ],
    )
    on_project = project_archive("Bad", parameters=[parameter])
    before = table_counts(catalog_url)

    with pytest.raises(OperationRefused, match=f"package Run: .*{said}"):
        catalog.deploy_project("Finance", "Bad", on_package)
    with pytest.raises(OperationRefused, match=f"project Bad: .*{said}"):
        catalog.deploy_project("Finance", "Bad", on_project)

    assert table_counts(catalog_url) == before


def test_a_worker_id_that_cannot_be_a_broker_user_writes_nothing(
    catalog: Catalog, catalog_url: str
) -> None:
    before = table_counts(catalog_url)

    with pytest.raises(OperationRefused, match="not a valid worker id: 'bad id'"):
        catalog.add_worker_agent("bad id")

    assert table_counts(catalog_url) == before


def _name(url: str, table: str) -> str:
    return f"internal_{table}" if url.startswith("sqlite") else table
