"""How the CLI shows the catalog's objects: environments, their variables and references
(and, for browsing, folders, projects, packages and parameters). A sensitive value is
never shown: it prints as ``(sensitive)``."""

from __future__ import annotations

import json
from collections.abc import Iterable

from rich.console import Group
from rich.table import Table
from rich.text import Text

from dispatcher.catalog.records import (
    EnvironmentReferenceRow,
    EnvironmentRow,
    EnvironmentVariableRow,
    ExecutionValueRow,
    FolderRow,
    PackageRow,
    ParameterRow,
    ProjectRow,
)
from dispatcher.cli.render import FLEX, ID, Col, Fitted, when
from schemas.messages import ParameterScalar

SENSITIVE = Text("(sensitive)", style="dim")
REFERENCE_KINDS = {"R": "relative", "A": "absolute"}


def shown(value: ParameterScalar, *, sensitive: bool = False) -> Text | str:
    """A value as the CLI prints it: JSON text, masked when sensitive, '-' for none."""
    if sensitive:
        return SENSITIVE
    return "-" if value is None else json.dumps(value)


def environments_table(rows: Iterable[EnvironmentRow]) -> Fitted:
    columns = (
        Col("folder", kind=FLEX),
        Col("environment", kind=FLEX),
        Col("variables", "right"),
        Col("references", "right"),
        Col("description", kind=FLEX),
    )
    cells = [
        (
            row.folder_name,
            row.name,
            str(len(row.variables)),
            str(len(row.references)),
            row.description or "-",
        )
        for row in rows
    ]
    return Fitted("Environments", columns, cells)


def variables_table(rows: Iterable[EnvironmentVariableRow]) -> Fitted:
    columns = (
        Col("variable", kind=FLEX),
        Col("type"),
        Col("value", kind=FLEX),
        Col("description", kind=FLEX),
    )
    cells = [
        (row.name, row.type, shown(row.value, sensitive=row.sensitive), row.description or "-")
        for row in rows
    ]
    return Fitted("Variables", columns, cells)


def references_table(rows: Iterable[EnvironmentReferenceRow], title: str = "References") -> Fitted:
    columns = (
        Col("id", "right", ID),
        Col("project", kind=FLEX),
        Col("type"),
        Col("environment", kind=FLEX),
    )
    cells = [
        (
            str(row.reference_id),
            f"{row.folder_name}/{row.project_name}",
            REFERENCE_KINDS.get(row.reference_type, row.reference_type),
            f"{row.environment_folder_name}/{row.environment_name}",
        )
        for row in rows
    ]
    return Fitted(title, columns, cells)


def environment_detail(row: EnvironmentRow) -> Group:
    head = Table(show_header=False, title=f"Environment {row.folder_name}/{row.name}",
                 title_justify="left")  # fmt: skip
    head.add_column(style="bold")
    head.add_column()
    head.add_row("description", row.description or "-")
    head.add_row("created", when(row.created_time))
    return Group(head, variables_table(row.variables), references_table(row.references))


def folders_table(rows: Iterable[FolderRow]) -> Fitted:
    columns = (
        Col("folder", kind=FLEX),
        Col("projects", "right"),
        Col("environments", "right"),
        Col("created"),
        Col("description", kind=FLEX),
    )
    cells = [
        (r.name, str(r.projects), str(r.environments), when(r.created_time), r.description or "-")
        for r in rows
    ]
    return Fitted("Folders", columns, cells)


def projects_table(rows: Iterable[ProjectRow]) -> Fitted:
    columns = (
        Col("folder", kind=FLEX),
        Col("project", kind=FLEX),
        Col("version", "right", ID),
        Col("deployed"),
        Col("packages", kind=FLEX),
    )
    cells = [
        (
            r.folder_name,
            r.name,
            str(r.project_lsn or "-"),
            when(r.last_deployed_time),
            ", ".join(r.packages) or "-",
        )
        for r in rows
    ]
    return Fitted("Projects", columns, cells)


def packages_table(rows: Iterable[PackageRow]) -> Fitted:
    columns = (
        Col("folder", kind=FLEX),
        Col("project", kind=FLEX),
        Col("package", kind=FLEX),
        Col("version", "right", ID),
        Col("description", kind=FLEX),
    )
    cells = [
        (r.folder_name, r.project_name, r.name, str(r.project_lsn), r.description or "-")
        for r in rows
    ]
    return Fitted("Packages", columns, cells)


def source_text(row: ParameterRow) -> str:
    if row.source == "environment":
        return f"environment variable {row.referenced_variable_name}"
    if row.source == "server":
        return f"server value {shown(row.server_value, sensitive=row.sensitive)}"
    if row.source == "default":
        return "manifest default"
    return "required" if row.required else "none"


def parameters_table(rows: Iterable[ParameterRow], title: str = "Parameters") -> Fitted:
    columns = (
        Col("parameter", kind=FLEX),
        Col("type"),
        Col("required"),
        Col("default", kind=FLEX),
        Col("value from", kind=FLEX),
    )
    cells = [
        (
            r.name + (" (sensitive)" if r.sensitive else ""),
            r.data_type,
            "yes" if r.required else "no",
            shown(r.design_default_value),
            source_text(r),
        )
        for r in rows
    ]
    return Fitted(title, columns, cells)


def _facts(title: str, facts: Iterable[tuple[str, str]]) -> Table:
    table = Table(show_header=False, title=title, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for name, value in facts:
        table.add_row(name, value)
    return table


def project_detail(row: ProjectRow) -> Group:
    head = _facts(
        f"Project {row.folder_name}/{row.name}",
        [
            ("description", row.description or "-"),
            ("version", str(row.project_lsn or "-")),
            ("deployed", when(row.last_deployed_time)),
            ("packages", ", ".join(row.packages) or "-"),
        ],
    )
    versions = Fitted(
        "Versions",
        (Col("version", "right", ID), Col("deployed"), Col("sha256", kind=FLEX), Col("current")),
        [
            (
                str(v.project_lsn),
                when(v.created_time),
                v.content_hash[:12],
                "yes" if v.current else "",
            )
            for v in row.versions
        ],
    )
    return Group(head, versions, parameters_table(row.parameters, "Project parameters"))


def package_detail(row: PackageRow) -> Group:
    head = _facts(
        f"Package {row.folder_name}/{row.project_name}/{row.name}",
        [("description", row.description or "-"), ("version", str(row.project_lsn))],
    )
    return Group(head, parameters_table(row.parameters, "Package parameters"))


KINDS = {20: "project", 30: "package", 50: "system"}


def values_table(rows: Iterable[ExecutionValueRow]) -> Fitted:
    columns = (Col("parameter", kind=FLEX), Col("of"), Col("value", kind=FLEX))
    cells = [
        (
            r.name,
            KINDS.get(r.object_type, str(r.object_type)),
            shown(r.value, sensitive=r.sensitive),
        )
        for r in rows
    ]
    return Fitted("Parameter values", columns, cells)
