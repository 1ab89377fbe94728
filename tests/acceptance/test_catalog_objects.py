"""Browsing and environments from the CLI, as an operator does it: folders, projects
(versions), packages and their parameters; environments, variables, references and an
execution created through one; the values an execution runs with; list filters."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.acceptance.conftest import EXAMPLE, Cli

CREATE = ("executions", "create", "--folder", "F", "--project", "SalesETL")


def test_browse_folders_projects_packages_and_their_parameters(ready: Cli, tmp_path: Path) -> None:
    changed = tmp_path / "sales_v2"
    shutil.copytree(EXAMPLE, changed)
    manifest = json.loads((changed / "manifest.json").read_text())
    manifest["description"] = "version two"
    (changed / "manifest.json").write_text(json.dumps(manifest))
    ready.ok("deploy", str(changed), "--folder", "F")
    ready.ok("projects", "set-parameter", "Currency", "CHF", "--folder", "F",
             "--project", "SalesETL")  # fmt: skip

    [folder] = ready.ok("folders", "list", "--json").json()
    project = ready.ok("projects", "show", "SalesETL", "--folder", "F", "--json").json()
    package = ready.ok(
        "packages", "show", "Sleep", "--folder", "F", "--project", "SalesETL", "--json"
    ).json()
    table = ready.ok("packages", "show", "LoadSales", "--folder", "F", "--project", "SalesETL")

    assert (folder["name"], folder["projects"], folder["environments"]) == ("F", 1, 0)
    assert [(v["project_lsn"], v["current"]) for v in project["versions"]] == [
        (2, True),
        (1, False),
    ]
    [currency] = project["parameters"]
    assert (currency["design_default_value"], currency["server_value"]) == ("EUR", "CHF")
    assert currency["source"] == "server"
    by_name = {p["name"]: p for p in package["parameters"]}
    assert (by_name["Seconds"]["data_type"], by_name["Seconds"]["required"]) == ("float", True)
    assert by_name["Interval"]["design_default_value"] == 1.0
    assert "ApiToken (sensitive)" in table.stdout
    assert "manifest default" in table.stdout
    names = [p["name"] for p in ready.ok("packages", "list", "--json").json()]
    assert names == ["LoadSales", "Sleep", "Summarise"]
    ready.ok("projects", "clear-parameter", "Currency", "--folder", "F", "--project", "SalesETL")
    project = ready.ok("projects", "show", "SalesETL", "--folder", "F", "--json").json()
    assert project["parameters"][0]["source"] == "default"
    missing = ready.run("packages", "show", "Nope", "--folder", "F", "--project", "SalesETL")
    assert missing.returncode == 1
    assert "package 'Nope' does not exist" in missing.stderr
    assert "it has LoadSales, Sleep, Summarise" in missing.stderr


def test_an_execution_through_an_environment_reference(ready: Cli) -> None:
    ready.ok("environments", "create", "TEST", "--folder", "F", "--description", "test")
    ready.ok("environments", "variables", "create", "TEST", "Seconds", "0.25", "--type",
             "Double", "--folder", "F")  # fmt: skip
    ready.ok("environments", "variables", "create", "TEST", "Key", "k-123", "--sensitive",
             "--folder", "F")  # fmt: skip
    reference = ready.ok("environments", "references", "create", "TEST", "--folder", "F",
                         "--project", "SalesETL", "--json").json()["reference_id"]  # fmt: skip
    ready.ok("projects", "set-parameter", "Seconds", "Seconds", "--reference", "--folder", "F",
             "--project", "SalesETL", "--package", "Sleep")  # fmt: skip

    created = ready.ok(*CREATE, "--package", "Sleep", "--reference", str(reference), "--json")
    shown = ready.ok("executions", "show", str(created.json()["execution_id"]), "--json").json()
    env = ready.ok("environments", "show", "TEST", "--folder", "F")

    values = {p["name"]: p["value"] for p in shown["parameters"]}
    assert values == {"Currency": "EUR", "Seconds": 0.25, "Interval": 1.0}
    assert shown["reference_id"] == reference
    assert "(sensitive)" in env.stdout
    assert "k-123" not in env.stdout
    assert "Finance" not in env.stdout  # the table is about folder F
    refused = ready.run(*CREATE, "--package", "Sleep", "--start")
    assert refused.returncode == 1
    assert "takes Seconds (variable Seconds) from an environment" in refused.stderr
    assert "--reference" in refused.stderr


def test_environment_refusals_are_one_line_and_write_nothing(ready: Cli) -> None:
    before = ready.ok("executions", "list", "--json").json()
    cases = [
        (("environments", "create", "X", "--folder", "Nope"), "folder 'Nope' does not exist"),
        (
            ("environments", "variables", "create", "X", "V", "1", "--folder", "F"),
            "environment 'X' does not exist in folder 'F'",
        ),
        ((*CREATE, "--package", "Sleep", "--reference", "999"), "reference 999 does not exist"),
        (
            ("environments", "references", "create", "X", "--folder", "F", "--project", "P"),
            "project 'P' does not exist",
        ),
    ]
    ready.ok("environments", "create", "E", "--folder", "F")
    bad_int = ("environments", "variables", "create", "E", "N", "many", "--type", "int")
    cases.append(((*bad_int, "--folder", "F"), "variable N takes a int, not 'many'"))
    for argv, said in cases:
        result = ready.run(*argv)
        assert result.returncode == 1, str(result)
        assert said in result.stderr, str(result)
        assert "Traceback" not in result.stderr
    assert ready.ok("executions", "list", "--json").json() == before
    shown = ready.ok("environments", "show", "E", "--folder", "F", "--json").json()
    assert shown["variables"] == []


def test_list_filters_and_the_created_column(ready: Cli) -> None:
    ready.ok(*CREATE, "--package", "Sleep", "--param", "Seconds=1")
    ready.ok(*CREATE, "--package", "LoadSales")

    sleep = ready.ok("executions", "list", "--package", "Sleep", "--json").json()
    recent = ready.ok("executions", "list", "--since", "1h", "--folder", "F", "--json").json()
    future = ready.ok("executions", "list", "--since", "2099-01-01", "--json").json()
    table = ready.ok("executions", "list", "--project", "SalesETL")
    bad = ready.run("executions", "list", "--since", "yesterday")

    assert [r["package_name"] for r in sleep] == ["Sleep"]
    assert [r["package_name"] for r in recent] == ["LoadSales", "Sleep"]
    assert future == []
    assert "created" in table.stdout.splitlines()[2]
    assert bad.returncode == 2
    assert "neither an ISO time" in bad.stderr
