"""Provisioning RabbitMQ for scaleout: per-worker users and permissions, through the
management HTTP API (stdlib urllib, no extra dependency) or as a definitions file that
ops import (``rabbitmqctl import_definitions`` or ``load_definitions`` in rabbitmq.conf).

A worker's RabbitMQ user is its worker id (its certificate's CN). What it may do, and
why each pattern is what RabbitMQ checks (docs/access-control.md):

- configure ``^$``: nothing. Workers never declare; the master declares their queues.
  A passive ``queue.declare`` (to look a queue up) needs no configure permission.
- write ``^scaleout\\.(status|heartbeat)$``: ``basic.publish`` checks write on the
  exchange only. The AMQP ``user_id`` property is checked against the login, not against
  a permission, so publishing with user_id needs nothing more.
- read ``^scaleout\\.(worker|control)\\.<id>$``: ``basic.consume`` (and ``basic.get``)
  checks read on the queue; its own two queues and nothing else.

Checked on RabbitMQ 3.10 (tests/integration/broker/test_permissions.py): a passive
``queue.declare`` needs no permission at all, so a worker can learn that another worker's
queue exists and how many messages it holds, though it can never read them. Queue names
are not secrets here; message bodies are.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from dispatcher.broker import topology
from dispatcher.errors import AccessRefused, BrokerError, BrokerUnavailable

DENY: Final = "^$"


@dataclass(frozen=True, slots=True)
class Permissions:
    """A RabbitMQ permission triple: regexes over resource names."""

    configure: str
    write: str
    read: str

    def as_json(self) -> dict[str, str]:
        return {"configure": self.configure, "write": self.write, "read": self.read}


def worker_permissions(worker_id: str) -> Permissions:
    """Read only its own task and control queues, write only the status and heartbeat
    exchanges, configure nothing."""
    queues = (topology.worker_queue(worker_id), topology.control_queue(worker_id))
    exchanges = (topology.STATUS_EXCHANGE, topology.HEARTBEAT_EXCHANGE)
    return Permissions(configure=DENY, write=_exactly(exchanges), read=_exactly(queues))


def master_permissions() -> Permissions:
    """Everything named ``scaleout.*``: the master declares, publishes and consumes."""
    everything = r"^scaleout\..*"
    return Permissions(configure=everything, write=everything, read=everything)


def _exactly(names: tuple[str, ...]) -> str:
    return "^(" + "|".join(re.escape(n) for n in names) + ")$"


def _q(name: str) -> str:
    """A path segment: vhost "/" is "%2F" in the management API."""
    return urllib.parse.quote(name, safe="")


class ManagementApi:
    """A small client of RabbitMQ's management HTTP API (basic auth; the admin's password
    never reaches a log or an error message)."""

    def __init__(self, base_url: str, user: str, password: str, *, timeout_s: float = 15.0):
        self._base = base_url.rstrip("/")
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        self._auth = f"Basic {token}"
        self._timeout = timeout_s

    def request(self, method: str, path: str, body: object | None = None) -> Any:
        """One call; the JSON answer (or None). Errors become dispatcher.errors."""
        if not self._base.startswith(("http://", "https://")):
            msg = f"management URL must be http(s)://, got {self._base}"
            raise BrokerError(msg)
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(  # noqa: S310  # scheme checked above
            self._base + path,
            data=data,
            method=method,
            headers={"Authorization": self._auth, "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=self._timeout) as resp:  # noqa: S310
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            detail = f"management API {method} {path}: HTTP {exc.code} {exc.reason}"
            if exc.code in {401, 403}:
                raise AccessRefused(detail, code=exc.code) from exc
            if exc.code == 404:
                raise NotFoundInBroker(detail, code=exc.code) from exc
            raise BrokerError(detail, code=exc.code) from exc
        except OSError as exc:
            detail = f"management API {method} {path}: {exc}"
            raise BrokerUnavailable(detail, hint="is the management plugin up?") from exc
        return json.loads(raw) if raw else None

    def create_vhost(self, vhost: str) -> None:
        self.request("PUT", f"/api/vhosts/{_q(vhost)}", {})

    def delete_vhost(self, vhost: str) -> None:
        self.request("DELETE", f"/api/vhosts/{_q(vhost)}")

    def create_user(self, user: str, *, password: str | None = None, tags: str = "") -> None:
        """A user; without a password it can only log in by certificate (EXTERNAL)."""
        body: dict[str, str] = {"tags": tags}
        body.update({"password": password} if password else {"password_hash": ""})
        self.request("PUT", f"/api/users/{_q(user)}", body)

    def delete_user(self, user: str) -> None:
        self.request("DELETE", f"/api/users/{_q(user)}")

    def set_permissions(self, vhost: str, user: str, permissions: Permissions) -> None:
        path = f"/api/permissions/{_q(vhost)}/{_q(user)}"
        self.request("PUT", path, permissions.as_json())

    def clear_permissions(self, vhost: str, user: str) -> None:
        self.request("DELETE", f"/api/permissions/{_q(vhost)}/{_q(user)}")


class NotFoundInBroker(BrokerError):
    """The management API has no such vhost, user or queue."""


def _queue_body(arguments: dict[str, object]) -> dict[str, object]:
    return {"durable": True, "auto_delete": False, "arguments": arguments}


def provision_worker(
    api: ManagementApi, vhost: str, worker_id: str, *, create_user: bool = True
) -> None:
    """Make ``worker_id`` a working worker in ``vhost``: its user (certificate login only;
    ``create_user=False`` keeps an existing user as it is), its permissions, its task and
    control queues with their bindings. Idempotent."""
    if create_user:
        api.create_user(worker_id)
    api.set_permissions(vhost, worker_id, worker_permissions(worker_id))
    for spec in topology.worker_queue_specs(worker_id):
        api.request(
            "PUT", f"/api/exchanges/{_q(vhost)}/{_q(spec.exchange)}", _exchange_body("direct")
        )
        api.request("PUT", f"/api/queues/{_q(vhost)}/{_q(spec.name)}", _queue_body(spec.arguments))
        binding = f"/api/bindings/{_q(vhost)}/e/{_q(spec.exchange)}/q/{_q(spec.name)}"
        api.request("POST", binding, {"routing_key": spec.routing_key, "arguments": {}})


def deprovision_worker(
    api: ManagementApi, vhost: str, worker_id: str, *, delete_queues: bool = False
) -> None:
    """Take a worker's permissions away (it can no longer connect to ``vhost``); with
    ``delete_queues`` also drop its queues and whatever they hold. The user stays: it may
    work in other vhosts."""
    with contextlib.suppress(NotFoundInBroker):
        api.clear_permissions(vhost, worker_id)
    if delete_queues:
        for queue in (topology.worker_queue(worker_id), topology.control_queue(worker_id)):
            with contextlib.suppress(NotFoundInBroker):
                api.request("DELETE", f"/api/queues/{_q(vhost)}/{_q(queue)}")


def _exchange_body(kind: str) -> dict[str, object]:
    return {"type": kind, "durable": True, "auto_delete": False, "internal": False}


def worker_definitions(
    worker_ids: Iterable[str],
    *,
    vhost: str = "/",
    master_user: str = "scaleout-master",
) -> dict[str, Any]:
    """A RabbitMQ definitions document (``rabbitmqctl import_definitions FILE``) with the
    master's and each worker's user (certificate login only), their permissions in
    ``vhost`` and the whole topology: exchanges, queues, bindings."""
    workers = list(dict.fromkeys(worker_ids))
    for worker in workers:
        topology.worker_queue(worker)  # refuses an invalid id before anything is emitted
    users = [_user(master_user), *(_user(w) for w in workers)]
    permissions = [{"user": master_user, "vhost": vhost, **master_permissions().as_json()}]
    permissions += [{"user": w, "vhost": vhost, **worker_permissions(w).as_json()} for w in workers]
    specs = [*topology.master_queue_specs()]
    for worker in workers:
        specs.extend(topology.worker_queue_specs(worker))
    return {
        "users": users,
        "vhosts": [{"name": vhost}],
        "permissions": permissions,
        "exchanges": [
            {"name": name, "vhost": vhost, **_exchange_body(kind), "arguments": {}}
            for name, kind in topology.exchange_specs()
        ],
        "queues": [{"name": s.name, "vhost": vhost, **_queue_body(s.arguments)} for s in specs],
        "bindings": [_binding(vhost, s) for s in specs],
    }


def _user(name: str) -> dict[str, Any]:
    # An empty hash: no password can match, the user logs in by certificate (EXTERNAL).
    return {
        "name": name,
        "password_hash": "",
        "hashing_algorithm": "rabbit_password_hashing_sha256",
        "tags": [],
    }


def _binding(vhost: str, spec: topology.QueueSpec) -> dict[str, Any]:
    return {
        "source": spec.exchange,
        "vhost": vhost,
        "destination": spec.name,
        "destination_type": "queue",
        "routing_key": spec.routing_key,
        "arguments": {},
    }


__all__ = [
    "DENY",
    "ManagementApi",
    "NotFoundInBroker",
    "Permissions",
    "deprovision_worker",
    "master_permissions",
    "provision_worker",
    "worker_definitions",
    "worker_permissions",
]


def main(argv: list[str] | None = None) -> int:
    """``python -m dispatcher.broker.provisioning [--vhost V] WORKER_ID ...``: print a definitions
    file for these workers (and the master) on stdout, for ``rabbitmqctl import_definitions``."""
    args = list(sys.argv[1:] if argv is None else argv)
    vhost = "/"
    if len(args) >= 2 and args[0] == "--vhost":
        vhost, args = args[1], args[2:]
    if not args:
        print(
            "usage: python -m dispatcher.broker.provisioning [--vhost V] WORKER_ID ...",
            file=sys.stderr,
        )
        return 2
    try:
        document = worker_definitions(args, vhost=vhost)
    except ValueError as exc:
        print(f"provisioning: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(document, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
