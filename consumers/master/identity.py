"""Who sent a message: the broker's word, not the body's.

RabbitMQ refuses a publish whose AMQP ``user_id`` differs from the connection's user, so
with one RabbitMQ user per worker the ``user_id`` *is* the sender. The body's
``worker_id`` must name the same worker, or the message is forged. ``shared_user`` mode
(one broker user for every worker, a loopback dev broker only) trusts the body and says
so at startup.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from dispatcher.broker import Delivery
from dispatcher.settings import SenderIdentity

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SenderCheck:
    mode: SenderIdentity = "user_id"

    def __post_init__(self) -> None:
        if self.mode == "shared_user":
            logger.warning(
                "identity.shared_user",
                extra={"hint": "senders are not verified; production uses one user per worker"},
            )

    def sender(self, delivery: Delivery, claimed_worker: str) -> str | None:
        """The verified sender, or None when the body claims to be someone else."""
        if self.mode == "shared_user":
            return claimed_worker
        if delivery.user_id is None or delivery.user_id != claimed_worker:
            return None
        return delivery.user_id
