"""Environments on both databases: SSIS's procedures, what create_execution resolves
(reference, server literal, default) into the assignment, and every refusal with row
counts (nothing written)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from dispatcher.api import ScaleOut
from dispatcher.catalog import Catalog
from dispatcher.errors import CatalogKeyMissing, NotFound, OperationRefused
from tests.fixtures.catalog import online_worker, project_archive, table_counts
from tests.integration.catalog.test_sensitive import assert_nowhere

PACKAGES = [
    {
        "name": "Load",
        "entry": {"argv": ["{python}", "load.py"]},
        "parameters": [
            {"name": "Rows", "type": "int", "default": 10},
            {"name": "Rate", "type": "float"},
            {"name": "Token", "type": "string", "sensitive": True},
        ],
    },
    {"name": "Other", "entry": {"argv": ["{python}", "load.py"]}},
]
PROJECT_PARAMETERS = [
    {"name": "Currency", "type": "string", "default": "EUR"},
    {"name": "Server", "type": "string"},
]
SECRET = "env-secret-77c1"


def sales_archive(extra: str = "") -> bytes:
    return project_archive("Sales", packages=PACKAGES, parameters=PROJECT_PARAMETERS, extra=extra)


@pytest.fixture
def so(catalog: Catalog) -> ScaleOut:
    """Finance/Sales deployed; Finance/PROD with three variables; Shared/DEV with one."""
    catalog.deploy_project("Finance", "Sales", sales_archive())
    catalog.create_folder("Shared")
    online_worker(catalog, "w1")
    api = ScaleOut(catalog)
    api.create_environment("Finance", "PROD", "production")
    api.create_environment_variable("Finance", "PROD", "Srv", "String", False, "prod-db")
    api.create_environment_variable("Finance", "PROD", "Rate", "Double", False, "2.5")
    api.create_environment_variable("Finance", "PROD", "Secret", "string", True, SECRET)
    api.create_environment("Shared", "DEV")
    api.create_environment_variable("Shared", "DEV", "Srv", "string", False, "dev-db")
    return api


def values_of(catalog: Catalog, execution_id: int) -> dict[tuple[int, str], object]:
    catalog.start_execution(execution_id)
    [assignment] = [a for a in catalog.claim_tasks(10) if a.execution_id == execution_id]
    return {(p.object_type, p.name): p.value for p in assignment.parameters}


def reference_everything(so: ScaleOut) -> None:
    so.set_object_parameter_value(20, "Finance", "Sales", "Server", "Srv", value_type="R")
    so.set_object_parameter_value(30, "Finance", "Sales", "Rate", "Rate", "Load", "R")
    so.set_object_parameter_value(30, "Finance", "Sales", "Token", "Secret", "Load", "R")


def test_a_reference_resolves_every_value_into_the_assignment(
    so: ScaleOut, catalog: Catalog, catalog_url: str
) -> None:
    """Relative and absolute references; the assignment carries each value the package
    runs with: referenced ones, a server literal and the manifest's defaults."""
    reference_everything(so)
    so.set_object_parameter_value(20, "Finance", "Sales", "Currency", "USD")
    relative = so.create_environment_reference("Finance", "Sales", "PROD", "R")
    absolute = so.create_environment_reference("Finance", "Sales", "DEV", "A", "Shared")

    prod = values_of(
        catalog, so.create_execution("Finance", "Sales", "Load", reference_id=relative)
    )
    plain = so.create_execution("Finance", "Sales", "Load", parameters={"Server": "x", "Rate": 1})

    assert prod == {
        (20, "Currency"): "USD",
        (20, "Server"): "prod-db",
        (30, "Rate"): 2.5,
        (30, "Rows"): 10,
        (30, "Token"): SECRET,
    }
    assert_nowhere(catalog_url, SECRET)
    with pytest.raises(OperationRefused, match=r"takes Token \(variable Secret\)"):
        catalog.start_execution(plain)  # Token comes from an environment; none given
    dev_only = so.create_execution(
        "Finance", "Sales", "Load", reference_id=absolute, parameters={"Rate": 9, "Token": "t"}
    )
    dev = values_of(catalog, dev_only)
    assert (dev[(20, "Server")], dev[(30, "Rate")], dev[(30, "Token")]) == ("dev-db", 9.0, "t")
    assert catalog.get_execution(dev_only).execution_id == dev_only


def test_an_explicit_value_overrides_and_rename_keeps_references(
    so: ScaleOut, catalog: Catalog
) -> None:
    reference_everything(so)
    ref = so.create_environment_reference("Finance", "Sales", "PROD", "R")
    so.rename_environment("Finance", "PROD", "PRODUCTION")

    values = values_of(
        catalog,
        so.create_execution(
            "Finance", "Sales", "Load", reference_id=ref, parameters={"Server": "override"}
        ),
    )

    assert values[(20, "Server")] == "override"
    assert values[(30, "Token")] == SECRET
    [row] = so.environment_references("Finance", "Sales")
    assert row.environment_name == "PRODUCTION"
    assert so.environment("Finance", "PRODUCTION").references == (row,)


def test_a_redeploy_keeps_server_values(so: ScaleOut, catalog: Catalog) -> None:
    so.set_object_parameter_value(30, "Finance", "Sales", "Rows", 77, "Load")
    catalog.deploy_project("Finance", "Sales", sales_archive(extra="  # v2"))

    values = values_of(
        catalog, so.create_execution("Finance", "Sales", "Load", parameters={"Rate": 1})
    )

    assert values[(30, "Rows")] == 77
    so.clear_object_parameter_value("Finance", "Sales", 30, "Load", "Rows")
    values = values_of(
        catalog, so.create_execution("Finance", "Sales", "Load", parameters={"Rate": 1})
    )
    assert values[(30, "Rows")] == 10


def test_reads_mask_sensitive_values(so: ScaleOut) -> None:
    env = so.environment("Finance", "PROD")

    shown = {v.name: (v.type, v.sensitive, v.value) for v in env.variables}
    assert shown == {
        "Rate": ("float", False, 2.5),
        "Secret": ("string", True, None),
        "Srv": ("string", False, "prod-db"),
    }
    assert [e.name for e in so.environments()] == ["PROD", "DEV"]
    assert [e.name for e in so.environments("Shared")] == ["DEV"]


def test_delete_environment_variable_and_reference(so: ScaleOut, catalog_url: str) -> None:
    ref = so.create_environment_reference("Finance", "Sales", "PROD", "R")
    so.delete_environment_variable("Finance", "PROD", "Srv")
    so.delete_environment_reference(ref)
    so.delete_environment("Finance", "PROD")

    assert [e.name for e in so.environments()] == ["DEV"]
    assert so.environment_references() == []
    counts = table_counts(catalog_url)
    assert sum(v for k, v in counts.items() if "environment_variables" in k) == 1


Call = Callable[[ScaleOut], object]
Refusal = tuple[Call, type[Exception], str]
REFUSALS: dict[str, Refusal] = {
    "environment exists": (
        lambda so: so.create_environment("Finance", "PROD"),
        OperationRefused,
        "already exists",
    ),
    "no such folder": (lambda so: so.create_environment("Nope", "X"), NotFound, "folder 'Nope'"),
    "bad environment name": (
        lambda so: so.create_environment("Finance", ""),
        OperationRefused,
        "1 to 128",
    ),
    "rename onto another": (
        lambda so: so.rename_environment("Finance", "PROD", "PROD"),
        OperationRefused,
        "already exists",
    ),
    "rename unknown": (lambda so: so.rename_environment("Finance", "X", "Y"), NotFound, "'X'"),
    "delete unknown": (lambda so: so.delete_environment("Shared", "PROD"), NotFound, "'PROD'"),
    "variable type": (
        lambda so: so.create_environment_variable("Finance", "PROD", "V", "Guid", False, "1"),
        OperationRefused,
        "data type 'Guid'",
    ),
    "variable value": (
        lambda so: so.create_environment_variable("Finance", "PROD", "V", "int", False, "x"),
        OperationRefused,
        "variable V takes a int, not 'x'",
    ),
    "variable name": (
        lambda so: so.create_environment_variable("Finance", "PROD", "a b", "int", False, 1),
        OperationRefused,
        "variable name 'a b'",
    ),
    "variable exists": (
        lambda so: so.create_environment_variable("Finance", "PROD", "Srv", "string", False, ""),
        OperationRefused,
        "already has a variable 'Srv'",
    ),
    "sensitive value not echoed": (
        lambda so: so.create_environment_variable("Finance", "PROD", "P", "int", True, "s3"),
        OperationRefused,
        "takes a int, not that value",
    ),
    "set unknown variable": (
        lambda so: so.set_environment_variable_value("Finance", "PROD", "Nope", 1),
        NotFound,
        "no variable 'Nope'",
    ),
    "set wrong type": (
        lambda so: so.set_environment_variable_value("Finance", "PROD", "Rate", "fast"),
        OperationRefused,
        "takes a float",
    ),
    "delete unknown variable": (
        lambda so: so.delete_environment_variable("Finance", "PROD", "Nope"),
        NotFound,
        "no variable 'Nope'",
    ),
    "reference type": (
        lambda so: so.create_environment_reference("Finance", "Sales", "PROD", "X"),
        OperationRefused,
        "'R' \\(relative\\) or 'A'",
    ),
    "relative with a folder": (
        lambda so: so.create_environment_reference("Finance", "Sales", "PROD", "R", "Shared"),
        OperationRefused,
        "names no folder",
    ),
    "absolute without a folder": (
        lambda so: so.create_environment_reference("Finance", "Sales", "DEV", "A"),
        OperationRefused,
        "needs the environment's folder",
    ),
    "reference to a missing environment": (
        lambda so: so.create_environment_reference("Finance", "Sales", "DEV", "R"),
        NotFound,
        "'DEV' does not exist in folder 'Finance'",
    ),
    "reference of a missing project": (
        lambda so: so.create_environment_reference("Finance", "Nope", "PROD", "R"),
        NotFound,
        "project 'Nope'",
    ),
    "delete unknown reference": (
        lambda so: so.delete_environment_reference(999),
        NotFound,
        "reference 999",
    ),
    "unknown parameter": (
        lambda so: so.set_object_parameter_value(20, "Finance", "Sales", "Nope", 1),
        NotFound,
        "'Nope' is not a parameter of project",
    ),
    "package parameter without its package": (
        lambda so: so.set_object_parameter_value(30, "Finance", "Sales", "Rows", 1),
        OperationRefused,
        "needs the package's name",
    ),
    "value type": (
        lambda so: so.set_object_parameter_value(20, "Finance", "Sales", "Server", "x", None, "Q"),
        OperationRefused,
        "value_type must be",
    ),
    "literal of the wrong type": (
        lambda so: so.set_object_parameter_value(30, "Finance", "Sales", "Rows", "many", "Load"),
        OperationRefused,
        "parameter Rows takes a int, not 'many'",
    ),
}

SETUPS: dict[str, Call] = {
    "another project's reference": lambda so: so.create_environment_reference(
        "Finance", "Sales", "PROD", "R"
    ),
    "a deleted environment": lambda so: (
        so.create_environment_reference("Finance", "Sales", "PROD", "R"),
        so.delete_environment("Finance", "PROD"),
    )[0],
    "a variable the environment lacks": lambda so: (
        so.set_object_parameter_value(20, "Finance", "Sales", "Server", "Nope", value_type="R"),
        so.create_environment_reference("Finance", "Sales", "PROD", "R"),
    )[1],
    "a sensitive variable for a plain parameter": lambda so: (
        so.set_object_parameter_value(20, "Finance", "Sales", "Server", "Secret", value_type="R"),
        so.create_environment_reference("Finance", "Sales", "PROD", "R"),
    )[1],
    "no reference for a referenced parameter": lambda so: so.set_object_parameter_value(
        20, "Finance", "Sales", "Server", "Srv", value_type="R"
    ),
}
"""create_execution refusals: each setup returns the reference id the run then uses."""
RUNS: dict[str, tuple[type[Exception], str]] = {
    "another project's reference": (OperationRefused, "belongs to project Finance/Sales"),
    "a deleted environment": (NotFound, "names a missing environment"),
    "a variable the environment lacks": (
        NotFound,
        "references variable 'Nope', which environment 'PROD' does not have",
    ),
    "a sensitive variable for a plain parameter": (
        OperationRefused,
        "sensitive variable 'Secret' cannot give a value to parameter Server",
    ),
    "no reference for a referenced parameter": (
        OperationRefused,
        "takes Server \\(variable Srv\\) from an environment, and has no reference",
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_each_refusal_writes_nothing(so: ScaleOut, catalog_url: str, case: str) -> None:
    call, error, said = REFUSALS[case]
    before = table_counts(catalog_url)

    with pytest.raises(error, match=said):
        call(so)

    assert table_counts(catalog_url) == before


@pytest.mark.parametrize("case", sorted(SETUPS))
def test_each_refused_run_writes_nothing(so: ScaleOut, catalog_url: str, case: str) -> None:
    """create --start through a reference: the refusal takes the execution back too."""
    reference_id = SETUPS[case](so)
    project = "Other" if case == "another project's reference" else "Sales"
    if project == "Other":
        so.catalog.deploy_project("Finance", "Other", project_archive("Other"))
    error, said = RUNS[case]
    before = table_counts(catalog_url)

    with pytest.raises(error, match=said):
        so.run(
            "Finance",
            project,
            "Load",
            parameters={"Rate": 1} if project == "Sales" else {},
            reference_id=reference_id if isinstance(reference_id, int) else None,
        )

    assert table_counts(catalog_url) == before


def test_a_sensitive_variable_without_a_key_is_refused(catalog_url: str, so: ScaleOut) -> None:
    keyless = ScaleOut(Catalog.open(catalog_url))
    before = table_counts(catalog_url)

    with pytest.raises(CatalogKeyMissing, match="has no catalog key"):
        keyless.create_environment_variable("Finance", "PROD", "K", "string", True, "pssst")

    assert table_counts(catalog_url) == before
    keyless.close()
