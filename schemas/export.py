"""Writes the wire protocol for workers written in other languages: JSON Schemas and topology.

One file per message type (``<type>.schema.json``, e.g. ``task.assign.schema.json``), the
broker topology as an AsyncAPI 3.0 document (``asyncapi.json``: a channel per queue, the
worker's operations, messages whose payloads ``$ref`` the schema files) and ``index.json``
naming them with the protocol's schema version. Run it as
``python -m schemas.export DIRECTORY``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Final

from schemas import topology
from schemas.messages import SCHEMA_VERSION, json_schemas
from schemas.topology import Direction, QueueSpec, Route

DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"
INDEX_FILE: Final = "index.json"
TOPOLOGY_FILE: Final = "asyncapi.json"
ASYNCAPI_VERSION: Final = "3.0.0"
AMQP_BINDING_VERSION: Final = "0.3.0"

_WORKER_ACTIONS: Final = {Direction.MASTER_TO_WORKER: "receive", Direction.WORKER_TO_MASTER: "send"}
"""Operations are the worker's: it receives what the master sends and sends what the master
receives; a wake is neither."""
_DESCRIPTION: Final = (
    "The RabbitMQ topology of scaleout, from a worker's point of view. The master declares "
    "every exchange and queue; a worker consumes its two queues and publishes to the status "
    "and heartbeat exchanges. Every publish is mandatory and confirmed, with content_type "
    f"{topology.CONTENT_TYPE}, the body's {' and '.join(topology.COPIED_PROPERTIES)} copied "
    "into the AMQP properties of the same name, and user_id set to the publisher's RabbitMQ "
    "login, which RabbitMQ checks; x-user-id-checked says whether the consumer also requires "
    "it to be the expected sender. scaleout.master.wake is fed by the operator's CLI and API, "
    "not by workers; scaleout.dead by the broker."
)


def schema_file_name(message_type: str) -> str:
    return f"{message_type}.schema.json"


def export_json_schemas(directory: Path) -> list[Path]:
    """Write every message's schema, the AsyncAPI topology and the index into ``directory``
    (created if needed); return the paths written, the index last. Output is stable: same
    models and topology, same bytes."""
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    index: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "messages": {}}
    for message_type, schema in sorted(json_schemas().items()):
        name = schema_file_name(message_type)
        written.append(_write(directory / name, {"$schema": DIALECT, **schema}))
        index["messages"][message_type] = name
    written.append(_write(directory / TOPOLOGY_FILE, asyncapi_document()))
    index["topology"] = TOPOLOGY_FILE
    written.append(_write(directory / INDEX_FILE, index))
    return written


def asyncapi_document() -> dict[str, Any]:
    """The broker topology as an AsyncAPI 3.0 document."""
    routes = topology.routes()
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "scaleout broker topology",
            "version": str(SCHEMA_VERSION),
            "description": _DESCRIPTION,
        },
        "defaultContentType": topology.CONTENT_TYPE,
        "channels": {
            channel_id(spec.name): _channel(spec, routes) for spec in topology.queue_templates()
        },
        "operations": dict(
            _operation(route) for route in routes if route.direction in _WORKER_ACTIONS
        ),
        "components": {"messages": {route.message_type: _message(route) for route in routes}},
    }


def channel_id(queue: str) -> str:
    """A queue's channel key: its name, a per-worker queue's without the id placeholder."""
    return queue.removesuffix(topology.WORKER_ID_PLACEHOLDER).removesuffix(".")


def _channel(spec: QueueSpec, routes: tuple[Route, ...]) -> dict[str, Any]:
    channel: dict[str, Any] = {"address": spec.name}
    if topology.WORKER_ID_PLACEHOLDER in spec.name:
        channel["parameters"] = {
            topology.WORKER_ID_PARAMETER: {
                "description": "The worker agent's id, matching "
                f"{topology.WORKER_ID_PATTERN}: also its RabbitMQ user and routing key."
            }
        }
    messages = {
        r.message_type: {"$ref": f"#/components/messages/{r.message_type}"}
        for r in routes
        if r.queue == spec.name
    }
    if messages:  # the dead-letter queue takes any body, valid or not
        channel["messages"] = messages
    channel["bindings"] = {"amqp": _queue_binding(spec)}
    return channel


def _queue_binding(spec: QueueSpec) -> dict[str, Any]:
    # The AMQP binding has no field for queue arguments or the queue's exchange binding
    # (and forbids `exchange` beside `queue`), so they go in extensions.
    return {
        "is": "queue",
        "queue": {"name": spec.name, "durable": True, "exclusive": False, "autoDelete": False},
        "x-arguments": spec.arguments,
        "x-binding": {"exchange": _exchange(spec.exchange), "routingKey": spec.routing_key},
        "bindingVersion": AMQP_BINDING_VERSION,
    }


def _exchange(name: str) -> dict[str, Any]:
    kinds = dict(topology.exchange_specs())
    return {"name": name, "type": kinds[name], "durable": True, "autoDelete": False}


def _operation(route: Route) -> tuple[str, dict[str, Any]]:
    action = _WORKER_ACTIONS[route.direction]
    channel = f"#/channels/{channel_id(route.queue)}"
    spec = _spec_of(route.queue)
    bindings: dict[str, Any] = {
        "cc": [spec.routing_key],
        "deliveryMode": route.delivery_mode,
        "mandatory": topology.MANDATORY,
    }
    if action == "receive":
        bindings["ack"] = True  # settled by the worker: ack, dead-letter or requeue
    bindings["bindingVersion"] = AMQP_BINDING_VERSION
    operation = {
        "action": action,
        "channel": {"$ref": channel},
        "messages": [{"$ref": f"{channel}/messages/{route.message_type}"}],
        "bindings": {"amqp": bindings},
    }
    return f"{action}.{route.message_type}", operation


def _spec_of(queue: str) -> QueueSpec:
    return next(spec for spec in topology.queue_templates() if spec.name == queue)


def _message(route: Route) -> dict[str, Any]:
    return {
        "name": route.message_type,
        "contentType": topology.CONTENT_TYPE,
        "payload": {"$ref": schema_file_name(route.message_type)},
        "bindings": {
            "amqp": {"messageType": route.message_type, "bindingVersion": AMQP_BINDING_VERSION}
        },
        "x-direction": route.direction.value,
        "x-delivery-mode": route.delivery_mode,
        "x-user-id-checked": route.user_id_checked,
    }


def _write(path: Path, document: dict[str, Any]) -> Path:
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m schemas.export DIRECTORY", file=sys.stderr)
        return 2
    for path in export_json_schemas(Path(args[0])):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
