"""Answers a worker's project fetch: the archive by content hash, from the catalog.

Workers never hold catalog credentials; they ask over the broker and cache by hash. The
reply goes to the asking worker's control queue, which only that worker can read.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

from consumers.master.identity import SenderCheck
from consumers.master.refusals import Refusals, discard, forged_detail
from consumers.master.verdicts import dead_letter, decode_as
from dispatcher.broker import ACK, Delivery, Verdict
from dispatcher.broker.topology import FETCH_QUEUE
from schemas.messages import DecodeReason, ProjectFetch

logger = logging.getLogger(__name__)


class ArchiveSource(Protocol):
    def project_archive(self, content_hash: str) -> bytes | None: ...


class ArchiveReplies(Protocol):
    def archive(self, worker_id: str, project_hash: str, archive: bytes | None) -> None: ...


class FetchHandler:
    """The handler of the ``scaleout.master.fetch`` consumer."""

    def __init__(
        self,
        catalog: ArchiveSource,
        replies: ArchiveReplies,
        *,
        senders: SenderCheck,
        refusals: Refusals | None = None,
    ) -> None:
        self._catalog = catalog
        self._replies = replies
        self._senders = senders
        self._refusals = refusals or discard()

    def __call__(self, deliveries: Sequence[Delivery]) -> list[Verdict]:
        verdicts = [self._one(delivery) for delivery in deliveries]
        self._refusals.flush()
        return verdicts

    def _one(self, delivery: Delivery) -> Verdict:
        fetch = decode_as(FETCH_QUEUE, delivery, ProjectFetch)
        if isinstance(fetch, Verdict):
            return fetch
        sender = self._senders.sender(delivery, fetch.worker_id)
        if sender is None:
            detail = f"body says {fetch.worker_id}, broker says {delivery.user_id}"
            forged = forged_detail(fetch.type, fetch.worker_id, delivery.user_id)
            self._refusals.note(fetch.worker_id, DecodeReason.FORGED_SENDER.value, forged)
            return dead_letter(FETCH_QUEUE, delivery, DecodeReason.FORGED_SENDER, detail)
        archive = self._catalog.project_archive(fetch.project_hash)
        self._replies.archive(sender, fetch.project_hash, archive)
        logger.info(
            "fetch.answered",
            extra={"worker": sender, "hash": fetch.project_hash, "found": archive is not None},
        )
        return ACK
