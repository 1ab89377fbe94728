"""Many simulated workers' heartbeats, and the master's cost of taking them.

A simulator process speaks the protocol for ``count`` workers at once: every second it
publishes one :class:`AgentHeartbeat` per worker (confirmed, one batch), stamped with its
``sent_at``. At the end it writes each worker's last ``sent_at`` to a JSON file, so the
bench can compare it with the worker row's ``LastOnlineTime`` (the master's database clock
when it applied that heartbeat): the heartbeat lag.

``python -m bench.heartbeats URL FIRST COUNT SECONDS OUT.json`` runs one simulator.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime
from pathlib import Path

from dispatcher.broker import Publisher, topology
from dispatcher.settings import BrokerSettings
from schemas.messages import AgentHeartbeat


def simulate(url: str, first: int, count: int, seconds: float, out: Path) -> None:
    settings = BrokerSettings(url=url)
    ids = [f"sim-{i:04d}" for i in range(first, first + count)]
    last: dict[str, str] = {}
    with Publisher(settings, name=f"bench-heartbeats-{first}", user_id="guest") as publisher:
        began = time.monotonic()
        tick = 0
        while tick == 0 or time.monotonic() - began < seconds:
            beats = [
                AgentHeartbeat(worker_id=w, machine_name="sim", max_task_count=10) for w in ids
            ]
            items = [
                (topology.HEARTBEAT_EXCHANGE, topology.HEARTBEAT_ROUTING_KEY, b) for b in beats
            ]
            errors = publisher.publish_batch(items)
            for beat, error in zip(beats, errors, strict=True):
                if error is None:
                    last[beat.worker_id] = beat.sent_at.isoformat()
            tick += 1
            delay = began + tick - time.monotonic()
            if delay > 0:
                time.sleep(delay)
    out.write_text(json.dumps(last))


def last_sent(paths: list[Path]) -> dict[str, datetime]:
    merged: dict[str, datetime] = {}
    for path in paths:
        for worker, stamp in json.loads(path.read_text()).items():
            merged[worker] = datetime.fromisoformat(stamp)
    return merged


if __name__ == "__main__":
    if len(sys.argv) != 6:
        sys.exit("usage: python -m bench.heartbeats URL FIRST COUNT SECONDS OUT.json")
    simulate(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), Path(sys.argv[5]))
