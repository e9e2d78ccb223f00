"""The retention part of the store port: finding what has outlived its keeping time.

The sweeper (``postcall.retention``) deletes what these return through the ordinary
delete paths, so the store needs only to find it. Every method is safe to call from
many processes at once: it only reads, or deletes what no one can still use.
"""

from __future__ import annotations

from typing import Protocol


class RetentionStore(Protocol):
    """Expired records, for the sweeper."""

    def expired_recordings(self, created_before: float, limit: int) -> list[tuple[str, str]]:
        """``(tenant, recording id)`` of up to ``limit`` recordings created before the
        epoch time ``created_before``, oldest first."""
        ...

    def prune_webhooks(self, created_before: float, limit: int) -> int:
        """Delete up to ``limit`` events created before the epoch time ``created_before``
        that are done with (fanned out, and none of their deliveries still pending), with
        their deliveries and the deliveries' attempt logs; return how many events."""
        ...
