"""The compose cluster's shell jobs, run for real in a temporary folder: the provision job
(certificates, RabbitMQ definitions) and the worker identity claims."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dispatcher.broker.provisioning import master_permissions, worker_permissions
from tests.integration.ops.support import DEPLOY, run, tool

PROVISION = DEPLOY / "compose" / "provision.sh"
IDENTITY = DEPLOY / "compose" / "worker-identity.sh"
SHOW_ID = ["bash", "-c", 'echo "$SCALEOUT_WORKER_ID $SCALEOUT_BROKER__CERT_FILE"']


@pytest.fixture(scope="module")
def provisioned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("provision")
    env = {
        **os.environ,
        "SCALEOUT_PROVISION_ROOT": str(root),
        "SCALEOUT_WORKER_POOL": "3",
        "RABBITMQ_ADMIN_PASSWORD": "not-a-real-secret",
        "PYTHON": sys.executable,
    }
    tool("openssl")
    done = run(["bash", str(PROVISION)], env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    again = run(["bash", str(PROVISION)], env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    return root


def _openssl(*args: str) -> str:
    done = run([tool("openssl"), *args])
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_broker_certificate_names_the_compose_service(provisioned: Path) -> None:
    """The broker's certificate verifies against the CA and carries DNS:rabbitmq."""
    pki = provisioned / "pki" / "rabbitmq"
    _openssl("verify", "-CAfile", str(pki / "ca.pem"), str(pki / "server.pem"))
    names = _openssl("x509", "-in", str(pki / "server.pem"), "-noout", "-ext", "subjectAltName")
    assert "DNS:rabbitmq" in names


def test_each_worker_has_a_client_certificate_for_its_id(provisioned: Path) -> None:
    """client-wN.pem has CN=wN, signed by the CA; its key is readable by its owner only."""
    pki = provisioned / "pki" / "workers"
    for worker in ("w1", "w2", "w3"):
        cert = pki / f"client-{worker}.pem"
        _openssl("verify", "-CAfile", str(pki / "ca.pem"), str(cert))
        subject = _openssl("x509", "-in", str(cert), "-noout", "-subject")
        assert subject.strip().endswith(f"CN = {worker}")
        key = (pki / f"client-{worker}.key").stat()
        assert key.st_mode & 0o077 == 0
        assert key.st_uid == 10001
    assert not (pki / "client-w4.pem").exists()
    assert not (pki / "ca.key").exists()


def test_definitions_hold_per_worker_users_and_permissions(provisioned: Path) -> None:
    """definitions.json has certificate-only users for the master and w1..w3 with the
    provisioning module's permissions, and an administrator with a password hash."""
    doc = json.loads((provisioned / "pki" / "rabbitmq" / "definitions.json").read_text())
    users = {user["name"]: user for user in doc["users"]}
    assert set(users) == {"scaleout-master", "w1", "w2", "w3", "scaleout-admin"}
    assert users["w1"]["password_hash"] == ""
    assert users["scaleout-admin"]["tags"] == ["administrator"]
    assert users["scaleout-admin"]["password_hash"]
    assert "not-a-real-secret" not in json.dumps(doc)
    grants = {p["user"]: p for p in doc["permissions"]}
    for worker in ("w1", "w2", "w3"):
        expected = worker_permissions(worker).as_json()
        assert {k: grants[worker][k] for k in expected} == expected
    assert grants["scaleout-master"]["configure"] == master_permissions().configure
    queues = {queue["name"] for queue in doc["queues"]}
    assert {"scaleout.worker.w3", "scaleout.control.w3"} <= queues


def _claim(tmp_path: Path, replica: str, *command: str) -> subprocess.CompletedProcess[str]:
    return run(["bash", str(IDENTITY), *command], env=_identity_env(tmp_path, replica))


def _identity_env(tmp_path: Path, replica: str) -> dict[str, str]:
    (tmp_path / "ids").mkdir(exist_ok=True)
    return {
        **os.environ,
        "SCALEOUT_IDENTITY_DIR": str(tmp_path / "ids"),
        "SCALEOUT_WORKER_POOL": "2",
        "SCALEOUT_WORKER_CERTS": "/pki/workers",
        "SCALEOUT_REPLICA_NAME": replica,
    }


def _hold(tmp_path: Path, replica: str) -> subprocess.Popen[str]:
    """A replica that keeps its identity until terminated; returns once it holds one."""
    process = subprocess.Popen(
        ["bash", str(IDENTITY), "sleep", "600"],
        env=_identity_env(tmp_path, replica),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert "is worker" in process.stdout.readline()
    return process


def test_a_replica_gets_an_identity_and_its_certificate(tmp_path: Path) -> None:
    """The command runs with SCALEOUT_WORKER_ID and that worker's certificate; its exit code
    is the script's, and a finished replica releases its claim."""
    done = _claim(tmp_path, "a", *SHOW_ID)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "w1 /pki/workers/client-w1.pem"
    assert not (tmp_path / "ids" / "w1").exists()
    failed = _claim(tmp_path, "a", "bash", "-c", "exit 3")
    assert failed.returncode == 3


def test_replicas_get_distinct_identities_until_the_pool_is_used_up(tmp_path: Path) -> None:
    """Two live replicas hold w1 and w2; a third is refused with a message naming the pool."""
    first, second = _hold(tmp_path, "a"), _hold(tmp_path, "b")
    try:
        owners = {p.name: (p / "owner").read_text().strip() for p in (tmp_path / "ids").iterdir()}
        assert owners == {"w1": "a", "w2": "b"}
        third = _claim(tmp_path, "c", *SHOW_ID)
        assert third.returncode == 1
        assert "SCALEOUT_WORKER_POOL" in third.stderr
    finally:
        for process in (first, second):
            process.send_signal(signal.SIGTERM)
            process.communicate(timeout=30)
    assert first.returncode == 128 + signal.SIGTERM  # the worker's own exit status
    assert list((tmp_path / "ids").iterdir()) == []


def test_a_restarted_replica_finds_its_own_claim(tmp_path: Path) -> None:
    """A container that died without releasing (SIGKILL) gets the same id back on restart."""
    ids = tmp_path / "ids"
    ids.mkdir()
    (ids / "w1").mkdir()
    (ids / "w1" / "owner").write_text("b\n")
    done = _claim(tmp_path, "b", *SHOW_ID)
    assert done.stdout.splitlines()[-1].startswith("w1 ")


def test_a_stale_claim_is_taken_over(tmp_path: Path) -> None:
    """A claim untouched for over two minutes (a removed container) goes to a new replica;
    a fresh one does not."""
    ids = tmp_path / "ids"
    for worker, age_s in (("w1", 10), ("w2", 600)):
        (ids / worker).mkdir(parents=True)
        owner = ids / worker / "owner"
        owner.write_text("gone\n")
        then = time.time() - age_s
        os.utime(owner, (then, then))
    done = _claim(tmp_path, "new", *SHOW_ID)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1].startswith("w2 ")
    assert (ids / "w1" / "owner").read_text().strip() == "gone"
