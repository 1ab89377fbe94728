"""The wire protocol export (schemas/export.py): one JSON Schema per message type, equal to
the models' schemas and usable by a standard validator; the broker topology as an AsyncAPI
document that matches what the master declares; and an index naming them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from pydantic import BaseModel

from dispatcher.broker import topology
from dispatcher.broker.provisioning import worker_permissions
from schemas.export import (
    DIALECT,
    INDEX_FILE,
    TOPOLOGY_FILE,
    export_json_schemas,
    main,
    schema_file_name,
)
from schemas.messages import MESSAGE_TYPES, SCHEMA_VERSION, DecodeError, decode, json_schemas
from tests.unit.test_messages import sample_messages

REPO = Path(__file__).resolve().parents[2]
WORKER = "w1"


def _load(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return document


def _type_of(model: type[BaseModel]) -> str:
    return str(model.model_fields["type"].default)


@pytest.fixture
def exported(tmp_path: Path) -> Path:
    export_json_schemas(tmp_path / "schemas")
    return tmp_path / "schemas"


def _topology(exported: Path) -> dict[str, Any]:
    return _load(exported / TOPOLOGY_FILE)


def _pointer(document: dict[str, Any], ref: str) -> Any:
    """What a local ``#/a/b`` reference points at (JSON Pointer, RFC 6901)."""
    node: Any = document
    for token in ref.removeprefix("#/").split("/"):
        node = node[token.replace("~1", "/").replace("~0", "~")]
    return node


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _concrete(template: str, channel: dict[str, Any], worker_id: str = WORKER) -> str:
    """A channel address or routing key with each parameter given ``worker_id``."""
    for parameter in channel.get("parameters", {}):
        template = template.replace("{" + parameter + "}", worker_id)
    return template


def _channel_messages(document: dict[str, Any], channel: dict[str, Any]) -> set[str]:
    """The name (the ``type``) of every message ``channel`` carries."""
    return {_pointer(document, ref["$ref"])["name"] for ref in channel.get("messages", {}).values()}


def _without(body: dict[str, Any], field: str) -> dict[str, Any]:
    return {name: value for name, value in body.items() if name != field}


def _decode_refuses(body: dict[str, Any]) -> bool:
    try:
        decode(json.dumps(body).encode())
    except DecodeError:
        return True
    return False


def test_writes_every_file_and_returns_them_index_last(tmp_path: Path) -> None:
    """The export writes one schema per message type, the topology and the index (last), and
    returns exactly the files it wrote."""
    written = export_json_schemas(tmp_path / "out")
    expected = {schema_file_name(_type_of(m)) for m in MESSAGE_TYPES} | {TOPOLOGY_FILE}
    assert {p.name for p in written[:-1]} == expected
    assert written[-1].name == INDEX_FILE
    assert {p.name for p in (tmp_path / "out").iterdir()} == expected | {INDEX_FILE}


def test_index_names_every_file(exported: Path) -> None:
    """index.json maps every message type to its schema file and states the schema version."""
    index = _load(exported / INDEX_FILE)
    assert index["schema_version"] == SCHEMA_VERSION
    assert index["messages"] == {_type_of(m): schema_file_name(_type_of(m)) for m in MESSAGE_TYPES}


def test_index_names_the_topology(exported: Path) -> None:
    """index.json names the AsyncAPI topology file, which exists beside it."""
    assert _load(exported / INDEX_FILE)["topology"] == TOPOLOGY_FILE
    assert (exported / TOPOLOGY_FILE).is_file()


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


@pytest.mark.parametrize("message", sample_messages(), ids=lambda m: type(m).__name__)
def test_schema_requires_what_decode_requires(exported: Path, message: BaseModel) -> None:
    """Every field decode refuses a body without is in the schema's ``required`` and fails
    validation when left out: ``type`` and ``schema_version`` too, though the models give
    them defaults."""
    schema = _load(exported / schema_file_name(_type_of(type(message))))
    body = json.loads(message.model_dump_json())
    needed = [field for field in body if _decode_refuses(_without(body, field))]
    assert {"type", "schema_version"} <= set(needed)
    assert set(needed) <= set(schema["required"])
    for field in needed:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(_without(body, field), schema)


def test_topology_is_an_asyncapi_3_document(exported: Path) -> None:
    """asyncapi.json is JSON, AsyncAPI 3.0.0, for this schema version, JSON by default."""
    document = _topology(exported)
    assert document["asyncapi"] == "3.0.0"
    assert document["info"]["version"] == str(SCHEMA_VERSION)
    assert document["defaultContentType"] == "application/json"
    assert document["channels"]
    assert document["operations"]


def test_every_declared_queue_is_a_channel(exported: Path) -> None:
    """Each queue the master declares is exactly one channel, with the same name, arguments,
    exchange (and its type) and routing key; per-worker queues through their parameter."""
    channels = _topology(exported)["channels"].values()
    kinds = dict(topology.exchange_specs())
    declared = [*topology.master_queue_specs(), *topology.worker_queue_specs(WORKER)]
    by_queue = {_concrete(c["address"], c): c for c in channels}
    assert sorted(by_queue) == sorted(spec.name for spec in declared)
    for spec in declared:
        channel = by_queue[spec.name]
        amqp = channel["bindings"]["amqp"]
        assert amqp["is"] == "queue"
        assert _concrete(amqp["queue"]["name"], channel) == spec.name
        assert amqp["queue"]["durable"] is True
        assert amqp["x-arguments"] == spec.arguments
        assert amqp["x-binding"]["exchange"]["name"] == spec.exchange
        assert amqp["x-binding"]["exchange"]["type"] == kinds[spec.exchange]
        assert _concrete(amqp["x-binding"]["routingKey"], channel) == spec.routing_key


def test_every_exchange_is_bound(exported: Path) -> None:
    """Every exchange the master declares appears, with its type, in some queue's binding."""
    bindings = [
        c["bindings"]["amqp"]["x-binding"] for c in _topology(exported)["channels"].values()
    ]
    bound = {(b["exchange"]["name"], b["exchange"]["type"]) for b in bindings}
    assert bound == set(topology.exchange_specs())


def test_channel_parameters_match_their_addresses(exported: Path) -> None:
    """Each ``{name}`` in an address is a declared parameter, and each parameter is used."""
    for channel in _topology(exported)["channels"].values():
        placeholders = set(re.findall(r"\{(\w+)\}", channel["address"]))
        assert placeholders == set(channel.get("parameters", {}))


def test_every_message_type_travels_some_channel(exported: Path) -> None:
    """Each message type in the protocol is carried by at least one channel."""
    document = _topology(exported)
    carried = set().union(*(_channel_messages(document, c) for c in document["channels"].values()))
    assert carried == set(json_schemas())


def test_message_payloads_are_their_schema_files(exported: Path) -> None:
    """Each message's payload is a relative ``$ref`` to the schema file of its own type."""
    for name, message in _topology(exported)["components"]["messages"].items():
        payload = message["payload"]["$ref"]
        assert payload == schema_file_name(name)
        assert _load(exported / payload)["properties"]["type"]["const"] == name


def test_every_ref_resolves(exported: Path) -> None:
    """A local ``$ref`` points into the document; any other names a file the export wrote."""
    document = _topology(exported)
    refs = list(_refs(document))
    files = [ref for ref in refs if not ref.startswith("#")]
    assert files, "no message payload refers to a schema file"
    for ref in refs:
        if ref.startswith("#"):
            assert _pointer(document, ref) is not None
        else:
            assert (exported / ref).is_file(), ref


def test_operations_are_what_a_worker_may_do(exported: Path) -> None:
    """From the worker's side: it receives only from queues its broker permissions let it
    read, and sends only through exchanges they let it write, the messages of that channel."""
    document = _topology(exported)
    allowed = worker_permissions(WORKER)
    assert document["operations"]
    for operation in document["operations"].values():
        channel = _pointer(document, operation["channel"]["$ref"])
        binding = channel["bindings"]["amqp"]
        if operation["action"] == "receive":
            assert re.fullmatch(allowed.read, _concrete(channel["address"], channel))
        else:
            assert operation["action"] == "send"
            assert re.fullmatch(allowed.write, binding["x-binding"]["exchange"]["name"])
        assert operation["bindings"]["amqp"]["cc"] == [binding["x-binding"]["routingKey"]]
        for ref in operation["messages"]:
            assert ref["$ref"].startswith(operation["channel"]["$ref"] + "/messages/")
            assert _pointer(document, ref["$ref"]) is not None


def test_export_is_stable(tmp_path: Path) -> None:
    """Exporting twice gives byte-identical files, the topology too, so the output can be
    committed."""
    first = {p.name: p.read_bytes() for p in export_json_schemas(tmp_path / "a")}
    second = {p.name: p.read_bytes() for p in export_json_schemas(tmp_path / "b")}
    assert TOPOLOGY_FILE in first
    assert first == second


def test_main_writes_and_lists(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`python -m schemas.export DIR` writes the files and prints their paths; no DIR is usage."""
    assert main([str(tmp_path)]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(p) for p in export_json_schemas(tmp_path)]
    assert main([]) == 2


def test_cli_export_prints_every_path(tmp_path: Path) -> None:
    """`scaleout schemas export DIR` prints each file it wrote, the topology included, one
    whole path a line even on a narrow terminal."""
    folder = tmp_path / ("deep-" * 12) / "protocol"
    done = subprocess.run(
        [sys.executable, "-m", "dispatcher.cli", "schemas", "export", str(folder)],
        cwd=REPO,
        env={**os.environ, "COLUMNS": "40"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    printed = done.stdout.splitlines()
    assert str(folder / TOPOLOGY_FILE) in printed
    assert sorted(printed) == sorted(str(p) for p in folder.iterdir())
