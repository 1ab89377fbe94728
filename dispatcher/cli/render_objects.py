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
