"""Bad input on the master's heartbeat and fetch paths: a clear log line, a dead letter or
a counted drop, and nothing in the catalog changes."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator

import pytest

from dispatcher.broker import topology
from dispatcher.catalog import Catalog
from dispatcher.metrics import MASTER
from schemas.messages import AgentHeartbeat, ProjectFetch
from tests.fixtures.broker import TlsBroker
from tests.fixtures.catalog import deploy_sample, project_archive
from tests.fixtures.master import (
    ScriptedWorker,
    fast_master_settings,
    running_master,
)
from tests.fixtures.polling import wait_for


def _dead(queue: str, reason: str) -> float:
    labels = {"queue": queue, "reason": reason}
    return MASTER.get_sample_value("scaleout_dead_letters_total", labels) or 0.0


@pytest.fixture
def w2(tls_broker: TlsBroker, vhost: str) -> Iterator[ScriptedWorker]:
    worker = ScriptedWorker("w2", tls_broker.settings_for("w2", vhost))
    yield worker
    worker.close()


def test_bad_heartbeats_are_dead_lettered(
    catalog: Catalog, catalog_url: str, tls_broker: TlsBroker, vhost: str, w2: ScriptedWorker
) -> None:
    """Malformed, wrong-version and forged heartbeats change no worker row."""
    queue = topology.HEARTBEAT_QUEUE
    cases = [("malformed_json", b"{"), ("schema_version", b'{"type":"agent.heartbeat"}')]
    before = {reason: _dead(queue, reason) for reason, _ in cases}
    forged_before = _dead(queue, "forged_sender")
    settings = fast_master_settings(tls_broker.settings_for("scaleout-master", vhost))
    with running_master(catalog_url, settings):
        for _, body in cases:
            w2.send_raw(
                body,
                exchange=topology.HEARTBEAT_EXCHANGE,
                routing_key=topology.HEARTBEAT_ROUTING_KEY,
            )
        # w2 claims to be w1: the broker vouches for w2, the body says w1.
        w2.publisher.publish(
            topology.HEARTBEAT_EXCHANGE,
            topology.HEARTBEAT_ROUTING_KEY,
            AgentHeartbeat(worker_id="w1"),
        )
        for reason, _ in cases:
            wait_for(lambda r=reason: _dead(queue, r) == before[r] + 1)
        wait_for(lambda: _dead(queue, "forged_sender") == forged_before + 1)
    assert catalog.list_worker_agents() == []


def test_fetch_answers_only_the_asker(
    catalog: Catalog, catalog_url: str, tls_broker: TlsBroker, vhost: str, w2: ScriptedWorker
) -> None:
    """A fetch gets the archive by hash on the asker's own queue; unknown hashes say not
    found; a fetch in another worker's name is dead-lettered."""
    deploy_sample(catalog)
    archive = project_archive("Sales")
    digest = hashlib.sha256(archive).hexdigest()
    forged_before = _dead(topology.FETCH_QUEUE, "forged_sender")
    settings = fast_master_settings(tls_broker.settings_for("scaleout-master", vhost))
    with running_master(catalog_url, settings):
        w2.publisher.publish(
            topology.STATUS_EXCHANGE,
            topology.FETCH_ROUTING_KEY,
            ProjectFetch(worker_id="w2", project_hash=digest),
        )
        reply = w2.next_archive()
        assert reply.found
        assert base64.b64decode(reply.archive_b64) == archive

        w2.publisher.publish(
            topology.STATUS_EXCHANGE,
            topology.FETCH_ROUTING_KEY,
            ProjectFetch(worker_id="w2", project_hash="0" * 64),
        )
        missing = w2.next_archive()
        assert (missing.project_hash, missing.found) == ("0" * 64, False)

        w2.publisher.publish(
            topology.STATUS_EXCHANGE,
            topology.FETCH_ROUTING_KEY,
            ProjectFetch(worker_id="w1", project_hash=digest),
        )
        wait_for(lambda: _dead(topology.FETCH_QUEUE, "forged_sender") == forged_before + 1)
