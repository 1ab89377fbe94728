"""The JSON Schema export (schemas/export.py): one file per message type plus an index,
equal to the models' schemas, and usable by a standard validator."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from pydantic import BaseModel

from schemas.export import DIALECT, INDEX_FILE, export_json_schemas, main, schema_file_name
from schemas.messages import MESSAGE_TYPES, SCHEMA_VERSION
from tests.unit.test_messages import sample_messages


def _load(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return document


def _type_of(model: type[BaseModel]) -> str:
    return str(model.model_fields["type"].default)


@pytest.fixture
def exported(tmp_path: Path) -> Path:
    export_json_schemas(tmp_path / "schemas")
    return tmp_path / "schemas"


def test_writes_one_file_per_message_and_an_index(tmp_path: Path) -> None:
    """The export writes exactly one schema per message type, then the index, and returns them."""
    written = export_json_schemas(tmp_path / "out")
    expected = {schema_file_name(_type_of(m)) for m in MESSAGE_TYPES}
    assert {p.name for p in written[:-1]} == expected
    assert written[-1].name == INDEX_FILE
    assert {p.name for p in (tmp_path / "out").iterdir()} == expected | {INDEX_FILE}


def test_index_names_every_file(exported: Path) -> None:
    """index.json maps every message type to its schema file and states the schema version."""
    index = _load(exported / INDEX_FILE)
    assert index["schema_version"] == SCHEMA_VERSION
    assert index["messages"] == {_type_of(m): schema_file_name(_type_of(m)) for m in MESSAGE_TYPES}


@pytest.mark.parametrize("model", MESSAGE_TYPES, ids=lambda m: m.__name__)
def test_file_equals_the_model_schema(exported: Path, model: type[BaseModel]) -> None:
    """Each file is the model's JSON Schema plus the dialect, and is itself a valid schema."""
    document = _load(exported / schema_file_name(_type_of(model)))
    assert document.pop("$schema") == DIALECT
    assert document == model.model_json_schema()
    jsonschema.Draft202012Validator.check_schema(document)


@pytest.mark.parametrize("message", sample_messages(), ids=lambda m: type(m).__name__)
def test_sample_validates_against_its_file(exported: Path, message: BaseModel) -> None:
    """A real message, as JSON on the wire, validates against its exported schema."""
    schema = _load(exported / schema_file_name(_type_of(type(message))))
    jsonschema.validate(json.loads(message.model_dump_json()), schema)


@pytest.mark.parametrize("message", sample_messages(), ids=lambda m: type(m).__name__)
def test_schema_refuses_what_the_model_refuses(exported: Path, message: BaseModel) -> None:
    """An extra field or a wrong schema_version fails the exported schema, as in decode."""
    schema = _load(exported / schema_file_name(_type_of(type(message))))
    body = json.loads(message.model_dump_json())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**body, "unexpected": 1}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**body, "schema_version": SCHEMA_VERSION + 1}, schema)


def test_export_is_stable(tmp_path: Path) -> None:
    """Exporting twice gives byte-identical files, so the output can be committed."""
    first = [p.read_bytes() for p in export_json_schemas(tmp_path / "a")]
    second = [p.read_bytes() for p in export_json_schemas(tmp_path / "b")]
    assert first == second


def test_main_writes_and_lists(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`python -m schemas.export DIR` writes the files and prints their paths; no DIR is usage."""
    assert main([str(tmp_path)]) == 0
    printed = capsys.readouterr().out.split()
    assert len(printed) == len(MESSAGE_TYPES) + 1
    assert all(Path(p).is_file() for p in printed)
    assert main([]) == 2
