"""Riding out a backend outage: the store or the blob store does not answer for a while.

Long-running loops (workers, unit workers, webhook dispatchers, heartbeats) must not
crash, spin or flood the log while Redis or S3 is down, and must not drop what they
hold. ``Outage`` tracks one loop's view of an outage: it logs its start once and its
end once, and says how long to wait before the next try (doubling up to a cap).
``until_available`` repeats one call through an outage, for writes whose result must
not be lost (a finished job's completion, a chunk's result, a delivery attempt's log).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from postcall.errors import StoreUnavailable, Unavailable

T = TypeVar("T")

FIRST_WAIT_S = 0.25
MAX_WAIT_S = 5.0


class Outage:
    """One loop's view of backend outages (see the module docstring). Thread-safe."""

    def __init__(
        self,
        who: str,
        logger: logging.Logger,
        *,
        first_s: float = FIRST_WAIT_S,
        max_s: float = MAX_WAIT_S,
    ) -> None:
        self.who = who
        self._log = logger
        self._first_s = first_s
        self._max_s = max(max_s, first_s)
        self._lock = threading.Lock()
        self._since: float | None = None
        self._kind: type[Unavailable] = Unavailable
        self._next_s = first_s

    @property
    def active(self) -> bool:
        """Whether the last try failed for a backend outage."""
        return self._since is not None

    def failed(self, exc: Unavailable) -> float:
        """Note a failed try; return how long to wait before the next one (s)."""
        with self._lock:
            if self._since is None:
                self._since = time.monotonic()
                self._kind = type(exc)
                self._next_s = self._first_s
                self._log.warning("%s: %s; waiting for it to come back", self.who, exc.message)
            wait = self._next_s
            self._next_s = min(self._next_s * 2, self._max_s)
            return wait

    def recovered(self, proven: type[Unavailable] = Unavailable) -> None:
        """Note a try that worked (logs the outage's end once). ``proven`` says which
        backends it reached: a store call ends a store outage, not a blob store one."""
        if self._since is None:
            return
        with self._lock:
            if self._since is None or not issubclass(self._kind, proven):
                return
            lasted = time.monotonic() - self._since
            self._since = None
            self._next_s = self._first_s
        self._log.warning("%s: the backends answer again (after %.1f s)", self.who, lasted)


def until_available(
    call: Callable[[], T],
    outage: Outage,
    stop: threading.Event,
    *,
    proves: type[Unavailable] = StoreUnavailable,
) -> T:
    """``call()``, repeated with backoff while it raises ``Unavailable``.

    Gives up (re-raising the last ``Unavailable``) only when ``stop`` is set: what the
    caller holds is then left to its lease, and taken over by another process after it.
    A success ends an outage of the backends ``proves`` names (a store write's, unless
    told otherwise).
    """
    while True:
        try:
            value = call()
        except Unavailable as exc:
            if stop.wait(outage.failed(exc)):
                raise
            continue
        outage.recovered(proves)
        return value
