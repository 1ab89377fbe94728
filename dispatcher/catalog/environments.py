"""SSIS environments: ``create_environment`` and friends, ``set_object_parameter_value``,
and the resolution ``create_execution @reference_id`` does.

An environment belongs to a folder and holds typed variables (sensitive ones sealed with
the catalog key). A project references environments: 'R' relative (the environment of
that name in the project's own folder) or 'A' absolute (in a named folder); references
name their environment, as SSIS's do, so one that was deleted and made again is found.
A parameter's server value is a literal ('V') or the name of a variable ('R').

When an execution is created, every declared parameter of its project and package that
has a value gets a row in ``execution_parameter_values``: the variable of the referenced
environment (with ``reference_id``), else the server literal, else the manifest's
default. Values set afterwards override them, and the master sends every row to the
worker, so the worker needs no manifest logic to know what a package runs with.
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from pydantic import ValidationError

from dispatcher.catalog.engine import Tx, new_id
from dispatcher.catalog.projects import check_name, folder_id, project_row
from dispatcher.catalog.records import (
    EnvironmentReferenceRow,
    EnvironmentRow,
    EnvironmentVariableRow,
)
from dispatcher.errors import NotFound, OperationRefused
from dispatcher.keys import Keyring, is_sealed
from schemas.messages import ParameterScalar
from schemas.project import ParameterSpec

OBJECT_PROJECT, OBJECT_PACKAGE = 20, 30
TYPES = {
    "string": "string",
    "int": "int",
    "float": "float",
    "bool": "bool",
    # SSIS's data type names, which SSIS scripts pass.
    "String": "string",
    "Char": "string",
    "DateTime": "string",
    "Boolean": "bool",
    "Byte": "int",
    "SByte": "int",
    "Int16": "int",
    "Int32": "int",
    "Int64": "int",
    "UInt32": "int",
    "UInt64": "int",
    "Single": "float",
    "Double": "float",
    "Decimal": "float",
}
REFERENCE_TYPES = {"R": "relative", "A": "absolute"}
VALUE_TYPES = {"V": "a literal", "R": "an environment variable's name"}


# -- environments -------------------------------------------------------------------------


def _folder(tx: Tx, folder_name: str) -> int:
    fid = folder_id(tx, folder_name)
    if fid is None:
        raise NotFound(f"folder {folder_name!r} does not exist", code=27104)
    return fid


def _environment(tx: Tx, folder_name: str, environment_name: str) -> Any:
    envs = tx.t.environments
    query = sa.select(envs).where(
        envs.c.folder_id == _folder(tx, folder_name), envs.c.environment_name == environment_name
    )
    row = tx.conn.execute(query).one_or_none()
    if row is None:
        msg = f"environment {environment_name!r} does not exist in folder {folder_name!r}"
        raise NotFound(msg, hint="see `scaleout environments list`", code=27182)
    return row


def _exists(tx: Tx, fid: int, environment_name: str) -> bool:
    envs = tx.t.environments
    query = sa.select(envs.c.environment_id).where(
        envs.c.folder_id == fid, envs.c.environment_name == environment_name
    )
    return tx.conn.execute(query).first() is not None


def create_environment(
    tx: Tx, folder_name: str, environment_name: str, environment_description: str = ""
) -> int:
    check_name("environment", environment_name)
    fid = _folder(tx, folder_name)
    if _exists(tx, fid, environment_name):
        msg = f"environment {environment_name!r} already exists in folder {folder_name!r}"
        raise OperationRefused(msg, code=27181)
    result = tx.conn.execute(
        sa.insert(tx.t.environments).values(
            folder_id=fid,
            environment_name=environment_name,
            description=environment_description,
            created_time=tx.now,
        )
    )
    return new_id(result)


def rename_environment(
    tx: Tx, folder_name: str, environment_name: str, new_environment_name: str
) -> None:
    """Rename, and the references that named it follow (they are by name)."""
    check_name("environment", new_environment_name)
    row = _environment(tx, folder_name, environment_name)
    if _exists(tx, row.folder_id, new_environment_name):
        msg = f"environment {new_environment_name!r} already exists in folder {folder_name!r}"
        raise OperationRefused(msg, code=27181)
    envs = tx.t.environments
    tx.conn.execute(
        sa.update(envs)
        .where(envs.c.environment_id == row.environment_id)
        .values(environment_name=new_environment_name)
    )
    for reference in _references_to(tx, folder_name, environment_name):
        refs = tx.t.environment_references
        tx.conn.execute(
            sa.update(refs)
            .where(refs.c.reference_id == reference.reference_id)
            .values(environment_name=new_environment_name)
        )


def delete_environment(tx: Tx, folder_name: str, environment_name: str) -> None:
    """Delete it and its variables; references stay (by name), as in SSIS, and a
    create_execution through one says the environment is missing."""
    row = _environment(tx, folder_name, environment_name)
    variables, envs = tx.t.environment_variables, tx.t.environments
    tx.conn.execute(sa.delete(variables).where(variables.c.environment_id == row.environment_id))
    tx.conn.execute(sa.delete(envs).where(envs.c.environment_id == row.environment_id))


# -- variables ----------------------------------------------------------------------------


def _spec(name: str, data_type: str, sensitive: bool) -> ParameterSpec:
    kind = TYPES.get(data_type)
    if kind is None:
        names = "string, int, float, bool (or SSIS's String, Int32, Double, Boolean, ...)"
        raise OperationRefused(f"data type {data_type!r} is not one of {names}", code=27159)
    try:
        return ParameterSpec(name=name, type=kind, sensitive=sensitive)
    except ValidationError:
        msg = f"variable name {name!r} must start with a letter or _, then letters, digits, _ . -"
        raise OperationRefused(msg, code=27100) from None


def _stored(keys: Keyring, spec: ParameterSpec, value: ParameterScalar, what: str) -> str:
    """``value`` coerced to ``spec``'s type, as stored: JSON, sealed when sensitive. A
    refused sensitive value is not echoed."""
    try:
        coerced = spec.coerce(value)
    except ValueError:
        shown = "that value" if spec.sensitive else repr(value)
        raise OperationRefused(f"{what} takes a {spec.type}, not {shown}", code=27159) from None
    text = json.dumps(coerced)
    return keys.seal(text, what=what) if spec.sensitive else text


def _variable(tx: Tx, environment_id: int, name: str) -> Any:
    variables = tx.t.environment_variables
    query = sa.select(variables).where(
        variables.c.environment_id == environment_id, variables.c.name == name
    )
    return tx.conn.execute(query).one_or_none()


def create_environment_variable(  # noqa: PLR0917  # SSIS's parameters, in SSIS's order
    tx: Tx,
    keys: Keyring,
    folder_name: str,
    environment_name: str,
    variable_name: str,
    data_type: str,
    sensitive: bool,
    value: ParameterScalar,
    description: str = "",
) -> None:
    env = _environment(tx, folder_name, environment_name)
    spec = _spec(variable_name, data_type, sensitive)
    if _variable(tx, env.environment_id, variable_name) is not None:
        msg = f"environment {environment_name!r} already has a variable {variable_name!r}"
        raise OperationRefused(msg, hint="set its value with `variables set`", code=27183)
    stored = _stored(keys, spec, value, f"variable {variable_name}")
    tx.conn.execute(
        sa.insert(tx.t.environment_variables).values(
            environment_id=env.environment_id,
            name=variable_name,
            description=description,
            type=spec.type,
            sensitive=sensitive,
            value=stored,
        )
    )


def set_environment_variable_value(  # noqa: PLR0917  # SSIS's parameters, in SSIS's order
    tx: Tx,
    keys: Keyring,
    folder_name: str,
    environment_name: str,
    variable_name: str,
    value: ParameterScalar,
) -> None:
    env = _environment(tx, folder_name, environment_name)
    row = _require_variable(tx, env, variable_name)
    spec = _spec(variable_name, row.type, bool(row.sensitive))
    stored = _stored(keys, spec, value, f"variable {variable_name}")
    variables = tx.t.environment_variables
    tx.conn.execute(
        sa.update(variables).where(variables.c.variable_id == row.variable_id).values(value=stored)
    )


def _require_variable(tx: Tx, env: Any, variable_name: str) -> Any:
    row = _variable(tx, env.environment_id, variable_name)
    if row is None:
        msg = f"environment {env.environment_name!r} has no variable {variable_name!r}"
        raise NotFound(msg, hint="see `scaleout environments show`", code=27183)
    return row


def delete_environment_variable(
    tx: Tx, folder_name: str, environment_name: str, variable_name: str
) -> None:
    env = _environment(tx, folder_name, environment_name)
    row = _require_variable(tx, env, variable_name)
    variables = tx.t.environment_variables
    tx.conn.execute(sa.delete(variables).where(variables.c.variable_id == row.variable_id))


# -- references ---------------------------------------------------------------------------


def _project(tx: Tx, folder_name: str, project_name: str) -> Any:
    project = project_row(tx, _folder(tx, folder_name), project_name)
    if project is None:
        msg = f"project {project_name!r} does not exist in folder {folder_name!r}"
        raise NotFound(msg, code=27109)
    return project


def create_environment_reference(  # noqa: PLR0917  # SSIS's parameters, in SSIS's order
    tx: Tx,
    folder_name: str,
    project_name: str,
    environment_name: str,
    reference_type: str,
    environment_folder_name: str | None = None,
) -> int:
    """The reference's id (SSIS's ``@reference_id`` output). The environment must exist
    now; 'R' takes no folder, 'A' requires one."""
    project = _project(tx, folder_name, project_name)
    if reference_type not in REFERENCE_TYPES:
        msg = f"reference_type must be 'R' (relative) or 'A' (absolute), not {reference_type!r}"
        raise OperationRefused(msg, code=27100)
    if reference_type == "R" and environment_folder_name:
        msg = "a relative reference ('R') names no folder: the environment is the project's"
        raise OperationRefused(msg, hint="use 'A' to name another folder", code=27100)
    if reference_type == "A" and not environment_folder_name:
        msg = "an absolute reference ('A') needs the environment's folder"
        raise OperationRefused(msg, hint="pass environment_folder_name", code=27100)
    env_folder = folder_name if reference_type == "R" else str(environment_folder_name)
    _environment(tx, env_folder, environment_name)
    refs = tx.t.environment_references
    same_folder = (
        refs.c.environment_folder_name == environment_folder_name
        if reference_type == "A"
        else refs.c.environment_folder_name.is_(None)
    )
    duplicate = sa.select(refs.c.reference_id).where(
        refs.c.project_id == project.project_id,
        refs.c.reference_type == reference_type,
        refs.c.environment_name == environment_name,
        same_folder,
    )
    if (found := tx.conn.execute(duplicate).scalar_one_or_none()) is not None:
        msg = f"project {project_name!r} already references that environment (reference {found})"
        raise OperationRefused(msg, code=27185)
    result = tx.conn.execute(
        sa.insert(refs).values(
            project_id=project.project_id,
            reference_type=reference_type,
            environment_folder_name=environment_folder_name if reference_type == "A" else None,
            environment_name=environment_name,
            created_time=tx.now,
        )
    )
    return new_id(result)


def delete_environment_reference(tx: Tx, reference_id: int) -> None:
    refs = tx.t.environment_references
    result = tx.conn.execute(sa.delete(refs).where(refs.c.reference_id == reference_id))
    if result.rowcount != 1:
        raise NotFound(f"environment reference {reference_id} does not exist", code=27101)


def _reference_query(tx: Tx) -> sa.Select[Any]:
    refs, projects, folders = tx.t.environment_references, tx.t.projects, tx.t.folders
    return (
        sa.select(
            refs.c.reference_id,
            folders.c.name.label("folder_name"),
            projects.c.name.label("project_name"),
            refs.c.reference_type,
            sa.func.coalesce(refs.c.environment_folder_name, folders.c.name).label("env_folder"),
            refs.c.environment_name,
        )
        .join(projects, projects.c.project_id == refs.c.project_id)
        .join(folders, folders.c.folder_id == projects.c.folder_id)
        .order_by(refs.c.reference_id)
    )


def _reference_row(row: Any) -> EnvironmentReferenceRow:
    return EnvironmentReferenceRow(
        reference_id=int(row.reference_id),
        folder_name=row.folder_name,
        project_name=row.project_name,
        reference_type=row.reference_type,
        environment_folder_name=row.env_folder,
        environment_name=row.environment_name,
    )


def list_references(
    tx: Tx, folder_name: str | None = None, project_name: str | None = None
) -> list[EnvironmentReferenceRow]:
    query = _reference_query(tx)
    if folder_name is not None:
        query = query.where(tx.t.folders.c.name == folder_name)
    if project_name is not None:
        query = query.where(tx.t.projects.c.name == project_name)
    return [_reference_row(row) for row in tx.conn.execute(query)]


def _references_to(
    tx: Tx, folder_name: str, environment_name: str
) -> list[EnvironmentReferenceRow]:
    return [
        ref
        for ref in list_references(tx)
        if ref.environment_folder_name == folder_name and ref.environment_name == environment_name
    ]


def reference(tx: Tx, reference_id: int) -> EnvironmentReferenceRow:
    query = _reference_query(tx).where(tx.t.environment_references.c.reference_id == reference_id)
    row = tx.conn.execute(query).one_or_none()
    if row is None:
        raise NotFound(f"environment reference {reference_id} does not exist", code=27101)
    return _reference_row(row)


# -- reads --------------------------------------------------------------------------------


def list_environments(tx: Tx, folder_name: str | None = None) -> list[EnvironmentRow]:
    envs, folders = tx.t.environments, tx.t.folders
    query = (
        sa.select(envs, folders.c.name.label("folder_name"))
        .join(folders, folders.c.folder_id == envs.c.folder_id)
        .order_by(folders.c.name, envs.c.environment_name)
    )
    if folder_name is not None:
        query = query.where(folders.c.name == folder_name)
    return [_environment_row(tx, row) for row in tx.conn.execute(query).all()]


def get_environment(tx: Tx, folder_name: str, environment_name: str) -> EnvironmentRow:
    row = _environment(tx, folder_name, environment_name)
    return _environment_row(tx, row, folder_name=folder_name)


def _environment_row(tx: Tx, row: Any, *, folder_name: str | None = None) -> EnvironmentRow:
    folder = folder_name or row.folder_name
    variables = tx.t.environment_variables
    query = (
        sa.select(variables)
        .where(variables.c.environment_id == row.environment_id)
        .order_by(variables.c.name)
    )
    return EnvironmentRow(
        environment_id=int(row.environment_id),
        folder_name=folder,
        name=row.environment_name,
        description=row.description,
        created_time=row.created_time,
        variables=tuple(
            EnvironmentVariableRow(
                name=v.name,
                type=v.type,
                sensitive=bool(v.sensitive),
                value=None if v.sensitive or v.value is None else json.loads(v.value),
                description=v.description,
            )
            for v in tx.conn.execute(query)
        ),
        references=tuple(_references_to(tx, folder, row.environment_name)),
    )


# -- parameter server values ----------------------------------------------------------------


def _parameter_row(
    tx: Tx, project: Any, object_type: int, object_name: str, parameter_name: str
) -> Any:
    params = tx.t.object_parameters
    query = sa.select(params).where(
        params.c.project_version_lsn == project.object_version_lsn,
        params.c.object_type == object_type,
        params.c.object_name == object_name,
        params.c.parameter_name == parameter_name,
    )
    row = tx.conn.execute(query).one_or_none()
    if row is None:
        kind = "project" if object_type == OBJECT_PROJECT else f"package {object_name}"
        msg = f"parameter {parameter_name!r} is not a parameter of {kind}"
        raise NotFound(msg, hint="see `scaleout projects show`", code=27110)
    return row


def _owner(project: Any, object_type: int, object_name: str | None) -> str:
    if object_type == OBJECT_PROJECT:
        return str(project.name)
    if object_type == OBJECT_PACKAGE:
        if not object_name:
            msg = "a package parameter (object_type 30) needs the package's name (object_name)"
            raise OperationRefused(msg, code=27100)
        return object_name
    msg = f"object_type must be 20 (project) or 30 (package), not {object_type}"
    raise OperationRefused(msg, code=27100)


def set_object_parameter_value(  # noqa: PLR0917  # SSIS's parameters, in SSIS's order
    tx: Tx,
    keys: Keyring,
    object_type: int,
    folder_name: str,
    project_name: str,
    parameter_name: str,
    parameter_value: ParameterScalar,
    object_name: str | None = None,
    value_type: str = "V",
) -> None:
    """The parameter's server value in the project's current version: 'V' a literal
    (coerced; sealed when sensitive), 'R' the name of an environment variable that
    ``create_execution @reference_id`` resolves. Redeploys keep it."""
    project = _project(tx, folder_name, project_name)
    owner = _owner(project, object_type, object_name)
    if value_type not in VALUE_TYPES:
        msg = f"value_type must be 'V' (a literal) or 'R' (a variable's name), not {value_type!r}"
        raise OperationRefused(msg, code=27100)
    row = _parameter_row(tx, project, object_type, owner, parameter_name)
    if value_type == "R":
        variable = str(parameter_value or "")
        check_name("environment variable", variable)
        values: dict[str, Any] = {"server_value": None, "referenced_variable_name": variable}
    else:
        spec = _spec(parameter_name, row.data_type, bool(row.sensitive))
        stored = _stored(keys, spec, parameter_value, f"parameter {parameter_name}")
        values = {"server_value": stored, "referenced_variable_name": None}
    params = tx.t.object_parameters
    tx.conn.execute(
        sa.update(params)
        .where(params.c.parameter_id == row.parameter_id)
        .values(value_type=value_type, value_set=True, **values)
    )


def clear_object_parameter_value(  # noqa: PLR0917  # SSIS's parameters, in SSIS's order
    tx: Tx,
    folder_name: str,
    project_name: str,
    object_type: int,
    object_name: str | None,
    parameter_name: str,
) -> None:
    """Back to the manifest's default (SSIS ``clear_object_parameter_value``)."""
    project = _project(tx, folder_name, project_name)
    row = _parameter_row(
        tx, project, object_type, _owner(project, object_type, object_name), parameter_name
    )
    params = tx.t.object_parameters
    tx.conn.execute(
        sa.update(params)
        .where(params.c.parameter_id == row.parameter_id)
        .values(value_type="V", value_set=False, server_value=None, referenced_variable_name=None)
    )


# -- resolution at create_execution ----------------------------------------------------------


def _declared_rows(tx: Tx, lsn: int, project_name: str, package_name: str) -> list[Any]:
    params = tx.t.object_parameters
    query = (
        sa.select(params)
        .where(
            params.c.project_version_lsn == lsn,
            sa.or_(
                sa.and_(
                    params.c.object_type == OBJECT_PROJECT, params.c.object_name == project_name
                ),
                sa.and_(
                    params.c.object_type == OBJECT_PACKAGE, params.c.object_name == package_name
                ),
            ),
        )
        .order_by(params.c.object_type, params.c.parameter_name)
    )
    return list(tx.conn.execute(query))


def resolve_values(  # noqa: PLR0917  # the execution's identity, as create_execution has it
    tx: Tx,
    keys: Keyring,
    execution_id: int,
    project: Any,
    lsn: int,
    package_name: str,
    reference_id: int | None,
    given: set[tuple[int, str]],
) -> None:
    """Write the value of every declared parameter that has one (see the module doc),
    except those in ``given``, which the caller sets itself."""
    rows = resolved_values(tx, keys, project, lsn, package_name, reference_id, given)
    if rows:
        tx.conn.execute(
            sa.insert(tx.t.execution_parameter_values),
            [{**row, "execution_id": execution_id} for row in rows],
        )


def resolved_values(  # noqa: PLR0917  # as resolve_values, without the execution
    tx: Tx,
    keys: Keyring,
    project: Any,
    lsn: int,
    package_name: str,
    reference_id: int | None,
    given: set[tuple[int, str]],
) -> list[dict[str, Any]]:
    """The value rows :func:`resolve_values` writes, less their ``execution_id``: the same
    for every execution of one package and reference that sets nothing itself."""
    environment = _reference_variables(tx, project, reference_id)
    rows = []
    for param in _declared_rows(tx, lsn, project.name, package_name):
        if (param.object_type, param.parameter_name) in given:
            continue
        stored = _resolved(keys, param, environment)
        if stored is not None:
            rows.append(
                {
                    "object_type": param.object_type,
                    "parameter_name": param.parameter_name,
                    "parameter_value": stored,
                    "sensitive": bool(param.sensitive),
                }
            )
    return rows


Environment = tuple[str, dict[str, Any]]
"""An environment's name and its variables' rows by name."""


def _reference_variables(tx: Tx, project: Any, reference_id: int | None) -> Environment | None:
    """The environment ``reference_id`` resolves to; None without a reference."""
    if reference_id is None:
        return None
    ref = reference(tx, reference_id)
    refs = tx.t.environment_references
    owner = sa.select(refs.c.project_id).where(refs.c.reference_id == reference_id)
    if tx.conn.execute(owner).scalar_one() != project.project_id:
        msg = (
            f"environment reference {reference_id} belongs to project {ref.folder_name}/"
            f"{ref.project_name}, not to {project.name}"
        )
        raise OperationRefused(msg, hint="see `scaleout environments references`", code=27101)
    try:
        env = _environment(tx, ref.environment_folder_name, ref.environment_name)
    except NotFound as exc:
        msg = f"environment reference {reference_id} names a missing environment: {exc}"
        raise NotFound(msg, hint="create the environment again, or delete the reference") from None
    variables = tx.t.environment_variables
    query = sa.select(variables).where(variables.c.environment_id == env.environment_id)
    return env.environment_name, {row.name: row for row in tx.conn.execute(query)}


def _resolved(keys: Keyring, param: Any, environment: Environment | None) -> str | None:
    if param.value_set and param.value_type == "R":
        if environment is None:
            return None  # start_execution refuses unless a value is set explicitly
        return _from_variable(keys, param, environment)
    if param.value_set and param.server_value is not None:
        return str(param.server_value)
    return None if param.default_value is None else str(param.default_value)


def _from_variable(keys: Keyring, param: Any, environment: Environment) -> str:
    env, variables = environment
    name = param.referenced_variable_name
    variable = variables.get(name)
    if variable is None:
        msg = (
            f"parameter {param.parameter_name} references variable {name!r}, which environment "
            f"{env!r} does not have"
        )
        raise NotFound(msg, hint="add it with `scaleout environments variables create`", code=27183)
    if variable.sensitive and not param.sensitive:
        msg = (
            f"sensitive variable {name!r} cannot give a value to parameter "
            f"{param.parameter_name}, which is not sensitive"
        )
        raise OperationRefused(msg, code=27184)
    stored = str(variable.value)
    if is_sealed(stored) and variable.type == param.data_type:
        return stored  # sealed stays sealed: nothing to open
    plain = keys.open(stored, what=f"variable {name}") if is_sealed(stored) else stored
    spec = _spec(param.parameter_name, param.data_type, bool(param.sensitive))
    return _stored(keys, spec, json.loads(plain), f"parameter {param.parameter_name}")


def unresolved_references(
    tx: Tx, lsn: int, project_name: str, package_name: str, given: set[tuple[int, str]]
) -> list[str]:
    """Parameters that take their value from an environment but got none (the execution
    has no reference, and no value was set): start_execution refuses them."""
    return [
        f"{p.parameter_name} (variable {p.referenced_variable_name})"
        for p in _declared_rows(tx, lsn, project_name, package_name)
        if p.value_set and p.value_type == "R" and (p.object_type, p.parameter_name) not in given
    ]
