"""The webhook dispatcher: fans outbox events out and delivers them, signed, with retries.

Runs as a few threads in ``postcall serve`` (with or without ``--no-worker``) and in
``postcall worker``; any number of dispatchers can share one store. Each delivery is
claimed under a lease longer than the request timeout; a dispatcher that dies
mid-delivery leaves it to be claimed again when the lease ends, and an attempt whose
lease was taken over is not logged twice (``finish_attempt`` is fenced). Every attempt
is logged with its outcome, status code and latency.

While the store does not answer, each dispatcher thread backs off (logging the outage
once) and resumes when it answers; an attempt already sent is logged once the store
answers again (``until_available``), so it is neither lost nor sent twice.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import httpx
from prometheus_client import Counter

from postcall.domain import new_id, utcnow
from postcall.errors import NotFound, Unavailable, UrlNotAllowed
from postcall.outages import Outage, until_available
from postcall.outbound import OutboundPolicy, guarded_client
from postcall.store.base import Store
from postcall.webhooks import (
    DEFAULT_SCHEDULE,
    Attempt,
    Delivery,
    Endpoint,
    Event,
    decide,
    encode_payload,
    event_payload,
    parse_retry_after,
    sign_headers,
)

log = logging.getLogger(__name__)

ATTEMPTS = Counter(
    "postcall_webhook_attempts_total", "Webhook delivery attempts by this process", ["outcome"]
)


@dataclass(frozen=True)
class DispatcherConfig:
    schedule: tuple[float, ...] = DEFAULT_SCHEDULE
    timeout_s: float = 15.0
    lease_s: float = 60.0
    poll_s: float = 1.0
    concurrency: int = 4
    batch: int = 100


@dataclass(frozen=True)
class _Outcome:
    code: int | None = None
    error: str | None = None
    retry_after_s: float | None = None


class Dispatcher:
    """Delivers webhooks from ``store`` until stopped."""

    def __init__(
        self,
        store: Store,
        policy: OutboundPolicy,
        config: DispatcherConfig | None = None,
        *,
        owner: str | None = None,
    ) -> None:
        self.store = store
        self.config = config or DispatcherConfig()
        self.owner = owner or f"{socket.gethostname()}-{os.getpid()}-{new_id('d')[2:10]}"
        self._client = guarded_client(policy, timeout_s=self.config.timeout_s)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.outage = Outage(f"webhook dispatcher {self.owner}", log)

    # --- lifecycle --------------------------------------------------------------------
    def start(self) -> None:
        for i in range(max(1, self.config.concurrency)):
            t = threading.Thread(target=self._loop, name=f"postcall-webhooks-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        log.info("webhook dispatcher %s started", self.owner)

    def stop(self, grace_s: float | None = None) -> None:
        """Stop; waits for attempts in flight (up to the request timeout). Anything still
        running then is claimed again by a dispatcher once its lease ends."""
        self._stop.set()
        deadline = time.monotonic() + (self.config.timeout_s + 1 if grace_s is None else grace_s)
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        self._threads.clear()
        self._client.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                busy = self.run_once()
            except Unavailable as exc:
                self._stop.wait(self.outage.failed(exc))
                continue
            except Exception:  # a store hiccup must not end the dispatcher
                log.exception("webhook dispatch failed")
                busy = False
            self.outage.recovered()
            if not busy:
                self._stop.wait(self.config.poll_s)

    def run_once(self) -> bool:
        """Fan out pending events, then make one delivery attempt; False when idle."""
        fanned = self.fan_out()
        return self.deliver_one() or fanned > 0

    # --- fan-out ----------------------------------------------------------------------
    def fan_out(self) -> int:
        """Turn pending events into deliveries; return how many events this call did."""
        done = 0
        for event in self.store.pending_events(self.config.batch):
            endpoints = [
                e.id for e in self.store.list_endpoints(event.tenant) if e.wants(event.type)
            ]
            payload = encode_payload(self._payload(event))
            if self.store.fan_out(event.id, payload, endpoints):
                done += 1
        return done

    def _payload(self, event: Event) -> dict[str, object]:
        """The event's body, with the metadata of its recording and transcript as they
        are now (empty when they were deleted meanwhile)."""
        rec_meta: dict[str, object] = {}
        tr_meta: dict[str, object] = {}
        with contextlib.suppress(NotFound):
            rec_meta = dict(self.store.get_recording(event.tenant, event.recording_id).metadata)
        if event.transcription_id is not None:
            with contextlib.suppress(NotFound):
                t = self.store.get_transcription(event.tenant, event.transcription_id)
                tr_meta = dict(t.metadata)
        return event_payload(event, recording_metadata=rec_meta, transcript_metadata=tr_meta)

    # --- delivery ---------------------------------------------------------------------
    def deliver_one(self) -> bool:
        """Claim one due delivery and attempt it; False when none was due."""
        cfg = self.config
        delivery = self.store.claim_delivery(
            self.owner, lease_s=cfg.lease_s, max_attempts=len(cfg.schedule)
        )
        if delivery is None:
            return False
        now = utcnow()
        try:
            endpoint = self.store.get_endpoint(delivery.tenant, delivery.endpoint_id)
        except NotFound:
            self._finish(delivery, now, _Outcome(error="the endpoint was deleted"), 0.0, None)
            return True
        if not endpoint.enabled:
            reason = endpoint.disabled_reason or "disabled"
            self._finish(delivery, now, _Outcome(error=f"the endpoint is {reason}"), 0.0, None)
            return True
        started = time.monotonic()
        outcome = self._send(endpoint, delivery, now)
        latency_ms = (time.monotonic() - started) * 1000
        decision = decide(
            outcome.code,
            attempts=delivery.attempts,
            schedule=cfg.schedule,
            retry_after_s=outcome.retry_after_s,
        )
        if decision.disable_endpoint:
            self._disable(endpoint)
        retry_at = None if decision.delay_s is None else now + timedelta(seconds=decision.delay_s)
        if decision.succeeded:
            outcome = replace(outcome, error=None)
        self._finish(delivery, now, outcome, latency_ms, retry_at, succeeded=decision.succeeded)
        return True

    def _send(self, endpoint: Endpoint, delivery: Delivery, now: datetime) -> _Outcome:
        body = delivery.payload.encode()
        headers = sign_headers(
            endpoint.signing_secrets(now), delivery.event_id, int(now.timestamp()), body
        )
        headers["content-type"] = "application/json"
        try:
            # Streamed and never read: the answer's status is all we need.
            with self._client.stream("POST", endpoint.url, content=body, headers=headers) as r:
                code = r.status_code
                if 200 <= code < 300:
                    return _Outcome(code)
                if 300 <= code < 400:
                    where = r.headers.get("location", "")
                    return _Outcome(code, f"HTTP {code}: redirect to {where!r} not followed")
                retry_after = parse_retry_after(r.headers.get("retry-after"))
                return _Outcome(code, f"HTTP {code}", retry_after)
        except UrlNotAllowed as exc:
            return _Outcome(error=f"refused, no request sent: {exc.message}")
        except httpx.InvalidURL as exc:
            return _Outcome(error=f"refused, no request sent: {exc}")
        except httpx.TimeoutException:
            return _Outcome(error=f"no answer within {self.config.timeout_s:g} s")
        except httpx.HTTPError as exc:
            return _Outcome(error=f"{type(exc).__name__}: {exc}")

    def _disable(self, endpoint: Endpoint) -> None:
        try:
            current = self.store.get_endpoint(endpoint.tenant, endpoint.id)
            self.store.save_endpoint(
                replace(
                    current,
                    enabled=False,
                    disabled_reason="disabled: the receiver answered 410 Gone",
                    updated_at=utcnow(),
                )
            )
        except NotFound:
            return
        log.warning("webhook endpoint %s disabled: it answered 410 Gone", endpoint.id)

    def _finish(
        self,
        delivery: Delivery,
        now: datetime,
        outcome: _Outcome,
        latency_ms: float,
        retry_at: datetime | None,
        *,
        succeeded: bool = False,
    ) -> None:
        attempt = Attempt(
            delivery.attempts,
            now,
            succeeded,
            outcome.code,
            round(latency_ms, 1),
            outcome.error,
        )
        label = "succeeded" if succeeded else ("retrying" if retry_at else "failed")
        ATTEMPTS.labels(label).inc()
        finished = until_available(
            lambda: self.store.finish_attempt(delivery.id, self.owner, attempt, retry_at=retry_at),
            self.outage,
            self._stop,
        )
        if not finished:
            log.warning("webhook delivery %s: lease lost; the attempt is not logged", delivery.id)
        elif not succeeded:
            log.info(
                "webhook delivery %s attempt %d failed (%s)%s",
                delivery.id,
                delivery.attempts,
                outcome.error,
                f"; next at {retry_at.isoformat()}" if retry_at else "; giving up",
            )
