"""The deployed project: a zip archive with a ``manifest.json`` that lists its packages.

Manifest format (version 1)::

    {
      "format": 1,
      "name": "SalesETL",
      "description": "optional",
      "parameters": [ {project-level parameters, as below} ],
      "packages": [
        {
          "name": "LoadSales",
          "entry": {"argv": ["{python}", "load_sales.py", "--input", "{InputFile}"]},
          "parameters": [
            {"name": "InputFile", "type": "string", "default": "sales.csv"},
            {"name": "ApiKey", "type": "string", "required": true, "sensitive": true}
          ]
        },
        {"name": "Summarise", "entry": {"callable": "etl.summarise:main"}}
      ]
    }

A package's ``entry`` is either a command (``argv``; ``{Name}`` placeholders take parameter
values, ``{python}`` the worker's interpreter) or a Python callable (``module:function``,
imported from the extracted archive's root, called with a ``dict`` of parameter values).
Every parameter also reaches the package as the environment variable
``SSIS_PARAM_<NAME>``. Sensitive parameters are refused as argv placeholders (argv is
visible to every user of the machine) and are never logged.

The archive's identity is the SHA-256 of its bytes (:func:`content_hash`): deploying the
same bytes twice is a no-op, and workers cache archives by that hash.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import zipfile
from collections.abc import Callable
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from schemas.messages import ParameterScalar

MANIFEST_NAME = "manifest.json"
MAX_ARCHIVE_BYTES = 48 * 1024 * 1024
"""Largest archive accepted: it travels to workers inside one broker message."""

Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]{0,127}$")]
ParameterType = Literal["string", "int", "float", "bool"]
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_.-]*)\}")


class ParameterSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Name
    type: ParameterType = "string"
    required: bool = False
    default: ParameterScalar = None
    sensitive: bool = False
    description: str = ""

    def coerce(self, value: ParameterScalar) -> ParameterScalar:
        """``value`` as this parameter's type; raise ``ValueError`` saying why not."""
        if value is None:
            return None
        try:
            return _COERCE[self.type](value)
        except (TypeError, ValueError):
            msg = f"parameter {self.name} takes a {self.type}, not {value!r}"
            raise ValueError(msg) from None


def _to_bool(value: ParameterScalar) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise ValueError(text)


def _to_int(value: ParameterScalar) -> int:
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError(value)
    return int(value)  # type: ignore[arg-type]


_COERCE: dict[str, Callable[[ParameterScalar], ParameterScalar]] = {
    "string": str,
    "int": _to_int,
    "float": lambda v: float(v),  # type: ignore[arg-type]  # noqa: PLW0108
    "bool": _to_bool,
}


class CommandEntry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    argv: Annotated[tuple[str, ...], Field(min_length=1)]


class CallableEntry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    callable: Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")]


class PackageSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Name
    entry: CommandEntry | CallableEntry
    parameters: tuple[ParameterSpec, ...] = ()
    description: str = ""

    @model_validator(mode="after")
    def _placeholders_known(self) -> Self:
        if isinstance(self.entry, CommandEntry):
            declared = {p.name: p for p in self.parameters}
            for arg in self.entry.argv:
                for name in _PLACEHOLDER.findall(arg):
                    if name == "python":
                        continue
                    if name not in declared:
                        msg = f"package {self.name}: argv uses {{{name}}}, not a parameter"
                        raise ValueError(msg)
                    if declared[name].sensitive:
                        msg = f"package {self.name}: sensitive {name} may not appear in argv"
                        raise ValueError(msg)
        _unique([p.name for p in self.parameters], f"package {self.name} parameter")
        return self


class ProjectManifest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal[1] = 1
    name: Name
    description: str = ""
    parameters: tuple[ParameterSpec, ...] = ()
    packages: Annotated[tuple[PackageSpec, ...], Field(min_length=1)]

    @model_validator(mode="after")
    def _unique_names(self) -> Self:
        _unique([p.name for p in self.packages], "package")
        _unique([p.name for p in self.parameters], "project parameter")
        return self

    def package(self, name: str) -> PackageSpec | None:
        return next((p for p in self.packages if p.name == name), None)


def _unique(names: list[str], what: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            msg = f"{what} {name} is declared twice"
            raise ValueError(msg)
        seen.add(name)


class ArchiveError(ValueError):
    """A project archive that cannot be deployed or run; the message says why."""


def content_hash(archive: bytes) -> str:
    return hashlib.sha256(archive).hexdigest()


def read_manifest(archive: bytes) -> ProjectManifest:
    """The manifest inside ``archive``; raise :class:`ArchiveError` when it is unusable."""
    if len(archive) > MAX_ARCHIVE_BYTES:
        msg = f"archive is {len(archive)} bytes; the limit is {MAX_ARCHIVE_BYTES}"
        raise ArchiveError(msg)
    try:
        with zipfile.ZipFile(io.BytesIO(archive)) as zf:
            raw = zf.read(MANIFEST_NAME)
    except zipfile.BadZipFile:
        msg = "not a zip archive"
        raise ArchiveError(msg) from None
    except KeyError:
        msg = f"archive has no {MANIFEST_NAME} at its root"
        raise ArchiveError(msg) from None
    try:
        manifest = ProjectManifest.model_validate(json.loads(raw))
    except ValueError as exc:
        msg = f"{MANIFEST_NAME} is invalid: {exc}"
        raise ArchiveError(msg) from None
    return manifest


def check_defaults(manifest: ProjectManifest) -> None:
    """Refuse a default that does not fit its parameter's type (every run would fail on
    the worker), and a sensitive parameter's default: it would sit in plain text in the
    archive, which the catalog stores and every worker caches. Deploy checks it; a worker
    does not, so versions deployed before still run."""
    owners = [(f"project {manifest.name}", manifest.parameters)]
    owners += [(f"package {p.name}", p.parameters) for p in manifest.packages]
    for owner, specs in owners:
        for spec in specs:
            if spec.default is None:
                continue
            if spec.sensitive:
                msg = (
                    f"{MANIFEST_NAME}: {owner}: sensitive parameter {spec.name} has a default; "
                    "give its value per execution (--param) instead"
                )
                raise ArchiveError(msg)
            try:
                spec.coerce(spec.default)
            except ValueError:
                msg = (
                    f"{MANIFEST_NAME}: {owner}: parameter {spec.name} is a {spec.type}, and its "
                    f"default {spec.default!r} is not"
                )
                raise ArchiveError(msg) from None
