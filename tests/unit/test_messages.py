"""The wire protocol's codec: every message round-trips, and every refusal names its
reason (schemas/messages.py)."""

from __future__ import annotations

import base64
import json
import os
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import BaseModel

from schemas.messages import (
    MAX_ARCHIVE_BODY_BYTES,
    MAX_BODY_BYTES,
    MESSAGE_TYPES,
    AgentHeartbeat,
    CancelReason,
    DecodeError,
    DecodeReason,
    DispatchWake,
    LogEntry,
    ParameterValue,
    ProjectArchive,
    ProjectFetch,
    ReadMarker,
    RefusalReason,
    RunningAttempt,
    TaskAssign,
    TaskCancel,
    TaskFinished,
    TaskLog,
    TaskOutcome,
    TaskProgress,
    TaskRefused,
    TaskStarted,
    decode,
    encode,
)
from schemas.project import MAX_ARCHIVE_BYTES

TASK = uuid.UUID("6f1c2a7e-0000-4000-8000-000000000001")
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
HASH = "ab" * 32
ABOUT = {"task_id": TASK, "attempt": 2, "execution_id": 7}


def sample_messages() -> list[BaseModel]:
    """One fully populated instance of every message type."""
    return [
        TaskAssign(
            **ABOUT,
            worker_id="w1",
            folder="Finance",
            project="Close",
            package="Month.dtsx",
            project_lsn=3,
            project_hash=HASH,
            parameters=(ParameterValue(name="Region", value="EMEA"),),
            max_attempts=3,
            lease_expires_at=NOW + timedelta(minutes=5),
        ),
        TaskCancel(**ABOUT, reason=CancelReason.STOP_REQUESTED),
        TaskRefused(**ABOUT, report_type="task.finished", reason=RefusalReason.NOT_HOLDER),
        ProjectArchive(project_hash=HASH, found=True, archive_b64="UEsDBA=="),
        TaskStarted(**ABOUT, worker_id="w1", machine_name="host-1", pid=4242),
        TaskProgress(**ABOUT, worker_id="w1", percent=42.5, message="halfway"),
        TaskLog(
            **ABOUT,
            worker_id="w1",
            entries=(LogEntry(seq=0, time=NOW, message="hello", source="stderr"),),
        ),
        TaskFinished(**ABOUT, worker_id="w1", outcome=TaskOutcome.FAILED, exit_code=1),
        AgentHeartbeat(
            worker_id="w1",
            running=(RunningAttempt(**ABOUT),),
            cpu_percent=12.0,
            free_memory_mb=2048.0,
        ),
        ProjectFetch(worker_id="w1", project_hash=HASH),
        ReadMarker(master="host-1:4242", token=uuid.uuid4()),
        DispatchWake(execution_id=7),
    ]


def test_samples_cover_every_message_type() -> None:
    """The samples below include exactly one instance of every message type."""
    assert sorted(type(m).__name__ for m in sample_messages()) == sorted(
        m.__name__ for m in MESSAGE_TYPES
    )


@pytest.mark.parametrize("message", sample_messages(), ids=lambda m: type(m).__name__)
def test_encode_decode_round_trip(message: BaseModel) -> None:
    """decode(encode(m)) is equal to m, with the same type, for every message type."""
    again = decode(encode(message))  # type: ignore[arg-type]
    assert type(again) is type(message)
    assert again == message


def test_encode_is_json_with_the_envelope() -> None:
    """An encoded body is a JSON object carrying type, schema_version, message_id, sent_at."""
    message = TaskCancel(**ABOUT, reason=CancelReason.STALE_ATTEMPT)
    raw = json.loads(encode(message))
    assert raw["type"] == "task.cancel"
    assert raw["schema_version"] == 1
    assert raw["message_id"] == str(message.message_id)
    assert datetime.fromisoformat(raw["sent_at"]) == message.sent_at


def _body(**changes: object) -> bytes:
    raw = json.loads(encode(TaskStarted(**ABOUT, worker_id="w1")))
    raw.update(changes)
    return json.dumps(raw).encode()


def _without(key: str) -> bytes:
    raw = json.loads(_body())
    del raw[key]
    return json.dumps(raw).encode()


REFUSED: list[tuple[str, bytes, DecodeReason]] = [
    ("oversized", b"{" + b" " * MAX_BODY_BYTES + b"}", DecodeReason.OVERSIZED),
    ("not json", b'{"type": "task.started",', DecodeReason.MALFORMED_JSON),
    ("not utf-8", b'{"type": "\xff"}', DecodeReason.MALFORMED_JSON),
    ("empty body", b"", DecodeReason.MALFORMED_JSON),
    ("a list", b"[1, 2]", DecodeReason.NOT_AN_OBJECT),
    ("a string", b'"task.started"', DecodeReason.NOT_AN_OBJECT),
    ("unknown type", _body(type="task.exploded"), DecodeReason.UNKNOWN_TYPE),
    ("no type", _without("type"), DecodeReason.UNKNOWN_TYPE),
    ("type as a list", _body(type=[]), DecodeReason.UNKNOWN_TYPE),
    ("type as an object", _body(type={"task.started": 1}), DecodeReason.UNKNOWN_TYPE),
    ("type as a number", _body(type=1), DecodeReason.UNKNOWN_TYPE),
    ("newer version", _body(schema_version=2), DecodeReason.SCHEMA_VERSION),
    ("version as text", _body(schema_version="1"), DecodeReason.SCHEMA_VERSION),
    ("no version", _without("schema_version"), DecodeReason.SCHEMA_VERSION),
    ("extra field", _body(is_admin=True), DecodeReason.INVALID),
    ("missing field", _without("task_id"), DecodeReason.INVALID),
    ("wrong field type", _body(attempt="second"), DecodeReason.INVALID),
    ("attempt zero", _body(attempt=0), DecodeReason.INVALID),
    ("bad worker id", _body(worker_id="w1; rm -rf /"), DecodeReason.INVALID),
    ("naive time", _body(sent_at="2026-11-25T12:00:00"), DecodeReason.INVALID),
]


@pytest.mark.parametrize(("body", "reason"), [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED])
def test_decode_refuses_with_the_reason(body: bytes, reason: DecodeReason) -> None:
    """A body that is not exactly one valid message raises DecodeError naming the check."""
    with pytest.raises(DecodeError) as caught:
        decode(body)
    assert caught.value.reason is reason
    assert str(caught.value).startswith(f"{reason.value}: ")


def test_decode_honours_a_larger_bound() -> None:
    """max_bytes raises the size bound (project archives use a larger one)."""
    message = ProjectArchive(project_hash=HASH, found=True, archive_b64="A" * MAX_BODY_BYTES)
    body = encode(message)
    with pytest.raises(DecodeError):
        decode(body)
    assert decode(body, max_bytes=len(body)) == message


def test_the_largest_deployable_archive_fits_its_message() -> None:
    """An archive at deploy's limit still reaches a worker: its base64 body with the JSON
    envelope is within the bound the worker decodes with."""
    archive = bytes(MAX_ARCHIVE_BYTES)
    message = ProjectArchive(
        project_hash=HASH, found=True, archive_b64=base64.b64encode(archive).decode()
    )
    body = encode(message)
    assert len(body) <= MAX_ARCHIVE_BODY_BYTES
    assert decode(body, max_bytes=MAX_ARCHIVE_BODY_BYTES) == message


def test_invalid_detail_never_echoes_values() -> None:
    """An INVALID refusal names fields, never their values (they may be sensitive)."""
    with pytest.raises(DecodeError) as caught:
        decode(_body(secret_password="hunter2-very-secret"))
    assert "secret_password" in caught.value.detail
    assert "hunter2" not in str(caught.value)


CONSUMER_REASONS = {DecodeReason.UNEXPECTED_TYPE, DecodeReason.FORGED_SENDER}
"""Raised by the consumers, not by decode: a valid message on the wrong queue, and a
report whose body names another worker than its AMQP user_id."""


def test_every_reason_is_covered() -> None:
    """Each DecodeReason is either produced by a refusal above or is a consumer's reason."""
    covered = {reason for _, _, reason in REFUSED} | CONSUMER_REASONS
    assert covered == set(DecodeReason)


@pytest.mark.parametrize("reason", sorted(CONSUMER_REASONS))
def test_consumer_reasons_carry_reason_and_detail(reason: DecodeReason) -> None:
    """A DecodeError built by a consumer keeps its reason and detail for the log line."""
    error = DecodeError(reason, "task.started on scaleout.master.heartbeat")
    assert error.reason is reason
    assert error.detail == "task.started on scaleout.master.heartbeat"
    assert str(error) == f"{reason.value}: task.started on scaleout.master.heartbeat"


def test_message_ids_are_version_4_uuids_unique_across_a_fork() -> None:
    """Ids come from a private generator (not os.urandom per message): still RFC 4122
    version 4, never repeated, and a forked child does not replay its parent's."""
    ids = [TaskStarted(**ABOUT, worker_id="w1").message_id for _ in range(20_000)]
    assert {(i.version, i.variant) for i in ids} == {(4, uuid.RFC_4122)}
    assert len(set(ids)) == len(ids)

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, to the parent
        os.close(read)
        child = [str(TaskStarted(**ABOUT, worker_id="w1").message_id) for _ in range(100)]
        os.write(write, "\n".join(child).encode())
        os._exit(0)
    os.close(write)
    parent = {str(TaskStarted(**ABOUT, worker_id="w1").message_id) for _ in range(100)}
    with os.fdopen(read) as pipe:
        from_child = set(pipe.read().split("\n"))
    os.waitpid(pid, 0)
    assert len(from_child) == 100
    assert not parent & from_child
