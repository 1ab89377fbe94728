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
"""

from __future__ import annotations

import base64
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any, Final

from dispatcher import topology
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

    @staticmethod
    def _q(name: str) -> str:
        return urllib.parse.quote(name, safe="")

    def create_vhost(self, vhost: str) -> None:
        self.request("PUT", f"/api/vhosts/{self._q(vhost)}", {})

    def delete_vhost(self, vhost: str) -> None:
        self.request("DELETE", f"/api/vhosts/{self._q(vhost)}")

    def create_user(self, user: str, *, password: str | None = None, tags: str = "") -> None:
        """A user; without a password it can only log in by certificate (EXTERNAL)."""
        body: dict[str, str] = {"tags": tags}
        body.update({"password": password} if password else {"password_hash": ""})
        self.request("PUT", f"/api/users/{self._q(user)}", body)

    def delete_user(self, user: str) -> None:
        self.request("DELETE", f"/api/users/{self._q(user)}")

    def set_permissions(self, vhost: str, user: str, permissions: Permissions) -> None:
        path = f"/api/permissions/{self._q(vhost)}/{self._q(user)}"
        self.request("PUT", path, permissions.as_json())

    def clear_permissions(self, vhost: str, user: str) -> None:
        self.request("DELETE", f"/api/permissions/{self._q(vhost)}/{self._q(user)}")


class NotFoundInBroker(BrokerError):
    """The management API has no such vhost, user or queue."""


__all__ = [
    "DENY",
    "ManagementApi",
    "NotFoundInBroker",
    "Permissions",
    "master_permissions",
    "worker_permissions",
]
