"""Retention: how long postcall keeps what it stores, and the sweeper that deletes the rest.

- Recordings (their media, their transcriptions and transcript files) are kept
  ``days`` after the recording was made (``POSTCALL_RETENTION_DAYS``; unset = until
  deleted). A transcription goes with its recording, so its ``expires_at`` is the
  recording's.
- With ``delete_media_after_transcription`` the media of a recording is deleted as soon
  as none of its transcriptions waits or runs any more (the transcripts stay).
- Webhook events, their deliveries and the deliveries' attempt logs are kept
  ``webhook_days`` after the event (``POSTCALL_WEBHOOK_RETENTION_DAYS``), once nothing
  is left to deliver. Idempotency keys expire by themselves (``POSTCALL_IDEMPOTENCY_TTL_S``).

The sweeper runs in the workers' idle loop, at most once per ``every_s`` in a process
(the first run at a random point of the first period, so that many workers spread out).
Any number of sweepers may run at once: each deletion goes through the ordinary delete
path, and a sweeper that finds a recording already gone moves on.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from postcall.errors import NotFound, Unavailable
from postcall.store.base import Store

if TYPE_CHECKING:
    from postcall.service import Service

log = logging.getLogger(__name__)

DAY_S = 86400.0


@dataclass(frozen=True)
class Retention:
    """What is kept how long (see the module docstring)."""

    days: float | None = None
    webhook_days: float | None = 30.0
    delete_media_after_transcription: bool = False

    def expires_at(self, created_at: datetime) -> datetime | None:
        """When a recording made at ``created_at`` (and its transcriptions) is deleted."""
        return None if self.days is None else created_at + timedelta(days=self.days)


@dataclass(frozen=True)
class Swept:
    """What one sweep deleted."""

    recordings: int = 0
    webhook_events: int = 0


class Sweeper:
    """Deletes expired recordings (with their transcriptions and files) and old webhook
    events (with their deliveries and logs)."""

    def __init__(
        self,
        service: Service,
        store: Store,
        retention: Retention,
        *,
        every_s: float = 300.0,
        batch: int = 100,
        clock: Callable[[], float] = time.time,
        first_in_s: float | None = None,
    ) -> None:
        self.service = service
        self.store = store
        self.retention = retention
        self.every_s = every_s
        self.batch = batch
        self._clock = clock
        self._lock = threading.Lock()
        # The first sweep at a random point of the first period (many workers spread out).
        first = random.uniform(0, every_s) if first_in_s is None else first_in_s
        self._next = time.monotonic() + first

    @property
    def enabled(self) -> bool:
        return self.retention.days is not None or self.retention.webhook_days is not None

    def maybe_sweep(self) -> Swept | None:
        """Sweep when a period has passed since the last sweep of this process."""
        if not self.enabled or time.monotonic() < self._next:
            return None
        if not self._lock.acquire(blocking=False):
            return None  # another thread of this process sweeps now
        try:
            self._next = time.monotonic() + self.every_s
            try:
                return self.sweep()
            except Unavailable as exc:
                log.info("retention sweep skipped: %s", exc.message)
            except Exception:
                log.exception("retention sweep failed")
            return None
        finally:
            self._lock.release()

    def sweep(self) -> Swept:
        """Delete everything that has outlived its retention now; return the counts."""
        swept = Swept(self._recordings(), self._webhook_events())
        if swept.recordings or swept.webhook_events:
            log.info(
                "retention: deleted %d recordings and %d webhook events",
                swept.recordings,
                swept.webhook_events,
            )
        return swept

    def _recordings(self) -> int:
        if self.retention.days is None:
            return 0
        cutoff = self._clock() - self.retention.days * DAY_S
        deleted = 0
        while True:
            found = self.store.expired_recordings(cutoff, self.batch)
            progress = 0
            for tenant, recording_id in found:
                try:
                    self.service.delete_recording(tenant, recording_id)
                except NotFound:
                    continue  # another sweeper (or the client) was first
                progress += 1
            deleted += progress
            if len(found) < self.batch or not progress:
                return deleted

    def _webhook_events(self) -> int:
        if self.retention.webhook_days is None:
            return 0
        cutoff = self._clock() - self.retention.webhook_days * DAY_S
        pruned = 0
        while True:
            n = self.store.prune_webhooks(cutoff, self.batch)
            pruned += n
            if n < self.batch:
                return pruned
