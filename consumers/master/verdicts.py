"""Decoding a delivery into one expected kind of message, or a dead-letter verdict that
is logged and counted with its reason. Shared by every master-side consumer."""

from __future__ import annotations

import logging
from typing import TypeVar

from pydantic import BaseModel

from dispatcher import metrics
from dispatcher.broker import Delivery, Disposition, Verdict
from schemas.messages import MAX_BODY_BYTES, DecodeError, DecodeReason, decode

logger = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)


def dead_letter(queue: str, delivery: Delivery, reason: DecodeReason, detail: str) -> Verdict:
    metrics.DEAD_LETTERS.labels(queue=queue, reason=reason.value).inc()
    logger.warning(
        "consumer.rejected",
        extra={
            "queue": queue,
            "reason": reason.value,
            "detail": detail,
            "message_id": delivery.message_id,
            "user_id": delivery.user_id,
        },
    )
    return Verdict(Disposition.DEAD_LETTER, reason.value)


def decode_as(
    queue: str,
    delivery: Delivery,
    expected: type[M] | tuple[type[M], ...],
    *,
    max_bytes: int = MAX_BODY_BYTES,
) -> M | Verdict:
    """The message in ``delivery`` if it is one of ``expected``, else a dead-letter verdict."""
    try:
        message = decode(delivery.body, max_bytes=max_bytes)
    except DecodeError as exc:
        return dead_letter(queue, delivery, exc.reason, exc.detail)
    if not isinstance(message, expected):
        kind = getattr(message, "type", "?")
        return dead_letter(queue, delivery, DecodeReason.UNEXPECTED_TYPE, f"{kind} on {queue}")
    return message
