"""Reads for browsing the catalog: folders, projects (their versions), packages and the
parameters each declares with where their values come from, and an execution's values.
A sensitive value is never read out: it comes back as None."""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa

from dispatcher.catalog.engine import Tx
from dispatcher.catalog.records import (
    ExecutionValueRow,
    FolderRow,
    PackageRow,
    ParameterRow,
    ProjectRow,
    ProjectVersionRow,
)
from dispatcher.errors import NotFound
from dispatcher.keys import is_sealed
from schemas.messages import ParameterScalar

OBJECT_PROJECT, OBJECT_PACKAGE = 20, 30


def list_folders(tx: Tx) -> list[FolderRow]:
    folders, projects, envs = tx.t.folders, tx.t.projects, tx.t.environments
    counts = {
        "projects": sa.select(sa.func.count())
        .where(projects.c.folder_id == folders.c.folder_id)
        .scalar_subquery(),
        "environments": sa.select(sa.func.count())
        .where(envs.c.folder_id == folders.c.folder_id)
        .scalar_subquery(),
    }
    query = sa.select(
        folders, counts["projects"].label("n_projects"), counts["environments"].label("n_envs")
    ).order_by(folders.c.name)
    return [
        FolderRow(
            folder_id=int(r.folder_id),
            name=r.name,
            description=r.description,
            created_time=r.created_time,
            projects=int(r.n_projects),
            environments=int(r.n_envs),
        )
        for r in tx.conn.execute(query)
    ]


def get_folder(tx: Tx, folder_name: str) -> FolderRow:
    for row in list_folders(tx):
        if row.name == folder_name:
            return row
    raise NotFound(f"folder {folder_name!r} does not exist", hint="see `scaleout folders list`")


def _projects_query(tx: Tx) -> sa.Select[Any]:
    projects, folders = tx.t.projects, tx.t.folders
    return (
        sa.select(projects, folders.c.name.label("folder_name"))
        .join(folders, folders.c.folder_id == projects.c.folder_id)
        .order_by(folders.c.name, projects.c.name)
    )


def _packages_of(tx: Tx, lsn: int | None) -> tuple[str, ...]:
    packages = tx.t.packages
    query = (
        sa.select(packages.c.name)
        .where(packages.c.project_version_lsn == lsn)
        .order_by(packages.c.name)
    )
    return tuple(tx.conn.execute(query).scalars())


def list_projects(tx: Tx, folder_name: str | None = None) -> list[ProjectRow]:
    query = _projects_query(tx)
    if folder_name is not None:
        query = query.where(tx.t.folders.c.name == folder_name)
    return [_project(tx, r) for r in tx.conn.execute(query).all()]


def _project(tx: Tx, r: Any, *, detail: bool = False) -> ProjectRow:
    lsn = None if r.object_version_lsn is None else int(r.object_version_lsn)
    return ProjectRow(
        project_id=int(r.project_id),
        folder_name=r.folder_name,
        name=r.name,
        description=r.description,
        project_lsn=lsn,
        created_time=r.created_time,
        last_deployed_time=r.last_deployed_time,
        packages=_packages_of(tx, lsn),
        versions=_versions(tx, int(r.project_id), lsn) if detail else (),
        parameters=tuple(parameters(tx, lsn, OBJECT_PROJECT, r.name)) if detail else (),
    )


def get_project(tx: Tx, folder_name: str, project_name: str) -> ProjectRow:
    query = _projects_query(tx).where(
        tx.t.folders.c.name == folder_name, tx.t.projects.c.name == project_name
    )
    row = tx.conn.execute(query).one_or_none()
    if row is None:
        msg = f"project {project_name!r} does not exist in folder {folder_name!r}"
        raise NotFound(msg, hint="see `scaleout projects list`")
    return _project(tx, row, detail=True)


def _versions(tx: Tx, project_id: int, current: int | None) -> tuple[ProjectVersionRow, ...]:
    versions = tx.t.object_versions
    query = (
        sa.select(versions.c.object_version_lsn, versions.c.content_hash, versions.c.created_time)
        .where(versions.c.object_id == project_id)
        .order_by(versions.c.object_version_lsn.desc())
    )
    return tuple(
        ProjectVersionRow(
            int(r.object_version_lsn),
            r.content_hash,
            r.created_time,
            int(r.object_version_lsn) == current,
        )
        for r in tx.conn.execute(query)
    )


def parameters(tx: Tx, lsn: int | None, object_type: int, object_name: str) -> list[ParameterRow]:
    params = tx.t.object_parameters
    query = (
        sa.select(params)
        .where(
            params.c.project_version_lsn == lsn,
            params.c.object_type == object_type,
            params.c.object_name == object_name,
        )
        .order_by(params.c.parameter_name)
    )
    return [_parameter(r) for r in tx.conn.execute(query)]


def _plain(stored: str | None, sensitive: bool) -> ParameterScalar:
    if stored is None or sensitive or is_sealed(stored):
        return None
    value: ParameterScalar = json.loads(stored)
    return value


def _parameter(r: Any) -> ParameterRow:
    if r.value_set and r.value_type == "R":
        source = "environment"
    elif r.value_set:
        source = "server"
    else:
        source = "default" if r.default_value is not None else "none"
    return ParameterRow(
        object_type=int(r.object_type),
        object_name=r.object_name,
        name=r.parameter_name,
        data_type=r.data_type,
        required=bool(r.required),
        sensitive=bool(r.sensitive),
        design_default_value=_plain(r.default_value, bool(r.sensitive)),
        server_value=_plain(r.server_value, bool(r.sensitive)),
        source=source,
        referenced_variable_name=r.referenced_variable_name if source == "environment" else None,
        description=r.description,
    )


def list_packages(
    tx: Tx, folder_name: str | None = None, project_name: str | None = None
) -> list[PackageRow]:
    rows = []
    for project in list_projects(tx, folder_name):
        if project_name is not None and project.name != project_name:
            continue
        rows += [_package(tx, project, name, detail=False) for name in project.packages]
    return rows


def get_package(tx: Tx, folder_name: str, project_name: str, package_name: str) -> PackageRow:
    project = get_project(tx, folder_name, project_name)
    if package_name not in project.packages:
        msg = f"package {package_name!r} does not exist in project {project_name!r}"
        raise NotFound(msg, hint=f"it has {', '.join(project.packages) or 'none'}")
    return _package(tx, project, package_name, detail=True)


def _package(tx: Tx, project: ProjectRow, name: str, *, detail: bool) -> PackageRow:
    packages = tx.t.packages
    query = sa.select(packages.c.description).where(
        packages.c.project_version_lsn == project.project_lsn, packages.c.name == name
    )
    lsn = project.project_lsn or 0
    return PackageRow(
        folder_name=project.folder_name,
        project_name=project.name,
        name=name,
        description=tx.conn.execute(query).scalar_one(),
        project_lsn=lsn,
        parameters=tuple(parameters(tx, lsn, OBJECT_PACKAGE, name)) if detail else (),
    )


def execution_values(tx: Tx, execution_id: int) -> list[ExecutionValueRow]:
    values = tx.t.execution_parameter_values
    query = (
        sa.select(values)
        .where(values.c.execution_id == execution_id)
        .order_by(values.c.object_type, values.c.parameter_name)
    )
    return [
        ExecutionValueRow(
            object_type=int(r.object_type),
            name=r.parameter_name,
            value=_plain(r.parameter_value, bool(r.sensitive)),
            sensitive=bool(r.sensitive),
        )
        for r in tx.conn.execute(query)
    ]
