"""SSISDB's folder and project procedures: create_folder and deploy_project.

A deployment stores the archive as a new object version (its lsn is the project_lsn) with
its packages and parameters, unless the bytes equal the current version's (a no-op).
"""

from __future__ import annotations

import json
from functools import cache, lru_cache
from typing import Any

import sqlalchemy as sa

from dispatcher.catalog.engine import Tx, new_id
from dispatcher.catalog.records import DeployResult
from dispatcher.catalog.tables import Tables
from dispatcher.errors import OperationRefused
from schemas.project import (
    ArchiveError,
    ProjectManifest,
    check_defaults,
    content_hash,
    read_manifest,
)
from schemas.states import ExecutionStatus

OPERATION_DEPLOY = 101
OBJECT_PROJECT, OBJECT_PACKAGE = 20, 30


def check_name(kind: str, name: str, limit: int = 128) -> None:
    if not name or len(name) > limit:
        msg = f"{kind} name must be 1 to {limit} characters, got {name!r}"
        raise OperationRefused(msg, code=27100)


def folder_id(tx: Tx, folder_name: str) -> int | None:
    folders = tx.t.folders
    query = sa.select(folders.c.folder_id).where(folders.c.name == folder_name)
    return tx.conn.execute(query).scalar_one_or_none()


def create_folder(tx: Tx, folder_name: str, folder_description: str = "") -> int:
    check_name("folder", folder_name)
    if folder_id(tx, folder_name) is not None:
        raise OperationRefused(f"folder {folder_name!r} already exists")
    return _insert_folder(tx, folder_name, folder_description)


def _insert_folder(tx: Tx, name: str, description: str) -> int:
    values = {"name": name, "description": description, "created_time": tx.now}
    result = tx.conn.execute(sa.insert(tx.t.folders).values(**values))
    return new_id(result)


def deploy_project(
    tx: Tx, folder_name: str, project_name: str, project_stream: bytes
) -> DeployResult:
    check_name("folder", folder_name)
    check_name("project", project_name)
    try:
        manifest = read_manifest(project_stream)
        check_defaults(manifest)
    except ArchiveError as exc:
        raise OperationRefused(f"cannot deploy project {project_name!r}: {exc}") from exc
    digest = content_hash(project_stream)
    fid = folder_id(tx, folder_name)
    if fid is None:
        fid = _insert_folder(tx, folder_name, "")
    project = project_row(tx, fid, project_name)
    if project is not None and _current_hash(tx, project.object_version_lsn) == digest:
        lsn = int(project.object_version_lsn)
        return DeployResult(folder_name, project_name, lsn, digest, created=False)
    project_id = (
        project.project_id if project is not None else _insert_project(tx, fid, project_name)
    )
    lsn = _insert_version(tx, project_id, project_stream, digest, manifest)
    if project is not None and project.object_version_lsn is not None:
        carry_server_values(tx, int(project.object_version_lsn), lsn)
    _record_deploy(tx, project_id, project_name)
    return DeployResult(folder_name, project_name, lsn, digest, created=True)


def project_row(tx: Tx, fid: int, project_name: str) -> Any:
    projects = tx.t.projects
    query = sa.select(projects).where(projects.c.folder_id == fid, projects.c.name == project_name)
    return tx.conn.execute(query).one_or_none()


def _current_hash(tx: Tx, lsn: int | None) -> str | None:
    versions = tx.t.object_versions
    query = sa.select(versions.c.content_hash).where(versions.c.object_version_lsn == lsn)
    return tx.conn.execute(query).scalar_one_or_none()


def _insert_project(tx: Tx, fid: int, name: str) -> int:
    values = {"folder_id": fid, "name": name, "created_time": tx.now, "last_deployed_time": tx.now}
    return new_id(tx.conn.execute(sa.insert(tx.t.projects).values(**values)))


def _insert_version(
    tx: Tx, project_id: int, archive: bytes, digest: str, manifest: ProjectManifest
) -> int:
    t = tx.t
    result = tx.conn.execute(
        sa.insert(t.object_versions).values(
            object_id=project_id,
            object_type=OBJECT_PROJECT,
            content_hash=digest,
            object_data=archive,
            manifest=manifest.model_dump_json(),
            created_time=tx.now,
        )
    )
    lsn = new_id(result)
    packages = [
        {
            "project_version_lsn": lsn,
            "project_id": project_id,
            "name": p.name,
            "description": p.description,
            "entry_point": True,
        }
        for p in manifest.packages
    ]
    tx.conn.execute(sa.insert(t.packages), packages)
    parameters = _parameter_rows(lsn, project_id, manifest)
    if parameters:  # an empty executemany would insert one row of defaults
        tx.conn.execute(sa.insert(t.object_parameters), parameters)
    tx.conn.execute(
        sa.update(t.projects)
        .where(t.projects.c.project_id == project_id)
        .values(object_version_lsn=lsn, last_deployed_time=tx.now, description=manifest.description)
    )
    return lsn


def _parameter_rows(lsn: int, project_id: int, manifest: ProjectManifest) -> list[dict[str, Any]]:
    owners = [(OBJECT_PROJECT, manifest.name, manifest.parameters)]
    owners += [(OBJECT_PACKAGE, p.name, p.parameters) for p in manifest.packages]
    return [
        {
            "project_version_lsn": lsn,
            "project_id": project_id,
            "object_type": object_type,
            "object_name": owner,
            "parameter_name": spec.name,
            "data_type": spec.type,
            "required": spec.required,
            "sensitive": spec.sensitive,
            "default_value": None if spec.default is None else json.dumps(spec.default),
            "description": spec.description,
        }
        for object_type, owner, specs in owners
        for spec in specs
    ]


def carry_server_values(tx: Tx, old_lsn: int, new_lsn: int) -> None:
    """A new version keeps the server values (set_object_parameter_value) of the
    parameters it still declares with the same type and sensitivity, as SSIS's deploy."""
    params = tx.t.object_parameters
    query = sa.select(params).where(
        params.c.project_version_lsn == old_lsn, params.c.value_set == sa.true()
    )
    old = {(r.object_type, r.object_name, r.parameter_name): r for r in tx.conn.execute(query)}
    if not old:
        return
    new = sa.select(params).where(params.c.project_version_lsn == new_lsn)
    for row in tx.conn.execute(new).all():
        before = old.get((row.object_type, row.object_name, row.parameter_name))
        if before is None or (before.data_type, before.sensitive) != (row.data_type, row.sensitive):
            continue
        tx.conn.execute(
            sa.update(params)
            .where(params.c.parameter_id == row.parameter_id)
            .values(
                value_type=before.value_type,
                value_set=True,
                server_value=before.server_value,
                referenced_variable_name=before.referenced_variable_name,
            )
        )


def _record_deploy(tx: Tx, project_id: int, project_name: str) -> None:
    tx.conn.execute(
        sa.insert(tx.t.operations).values(
            operation_type=OPERATION_DEPLOY,
            created_time=tx.now,
            object_type=OBJECT_PROJECT,
            object_id=project_id,
            object_name=project_name,
            status=int(ExecutionStatus.SUCCEEDED),
            start_time=tx.now,
            end_time=tx.now,
            executed_count=0,
        )
    )


def manifest_at(tx: Tx, lsn: int) -> ProjectManifest:
    return _parsed_manifest(tx.conn.execute(_manifest_query(tx.t), {"b_lsn": lsn}).scalar_one())


@cache
def _manifest_query(t: Tables) -> sa.Select[tuple[Any]]:
    versions = t.object_versions
    return sa.select(versions.c.manifest).where(
        versions.c.object_version_lsn == sa.bindparam("b_lsn")
    )


@lru_cache(maxsize=64)
def _parsed_manifest(text: str) -> ProjectManifest:
    """Parsed once per text (manifests are frozen; a project version's never changes), as
    every create and start of an execution reads its manifest."""
    return ProjectManifest.model_validate_json(text)
