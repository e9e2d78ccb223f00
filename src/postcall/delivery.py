"""The webhook dispatcher: fans outbox events out and delivers them, signed, with retries.

Runs in ``postcall serve`` (with or without ``--no-worker``) and in ``postcall worker``;
any number of dispatchers can share one store. One thread fans events out and claims
due deliveries while a pool of senders (``concurrency``) has a free place; each claimed
delivery is sent at once. Receivers are slow (seconds) far more often than the store,
so many attempts are in flight together. No endpoint may hold more than
``per_endpoint`` of them: a delivery claimed for an endpoint at that bound is given
back unsent (``postpone_delivery``: not an attempt, due again shortly), so one receiver
that never answers cannot take the places of the others.

Each delivery is claimed under a lease longer than the request timeout; a dispatcher
that dies mid-delivery leaves it to be claimed again when the lease ends, and an attempt
whose lease was taken over is not logged twice (``finish_attempt`` is fenced). Every
attempt is logged with its outcome, status code and latency.

While the store does not answer, the dispatcher backs off (logging the outage once) and
resumes when it answers; an attempt already sent is logged once the store answers again
(``until_available``), so it is neither lost nor sent twice.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_all
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
    concurrency: int = 256
    per_endpoint: int = 64
    postpone_s: float = 0.5
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
        places = max(1, self.config.concurrency)
        self._client = guarded_client(
            policy, timeout_s=self.config.timeout_s, max_connections=places
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._places = threading.Semaphore(places)
        self._lock = threading.Lock()
        self._busy: dict[str, int] = {}  # endpoint id -> attempts in flight
        self._in_flight: set[Future[None]] = set()
        self.outage = Outage(f"webhook dispatcher {self.owner}", log)

    # --- lifecycle --------------------------------------------------------------------
    def start(self) -> None:
        self._pool = ThreadPoolExecutor(
            max_workers=max(1, self.config.concurrency), thread_name_prefix="postcall-webhook"
        )
        self._thread = threading.Thread(target=self._loop, name="postcall-webhooks", daemon=True)
        self._thread.start()
        log.info("webhook dispatcher %s started", self.owner)

    def stop(self, grace_s: float | None = None) -> None:
        """Stop; waits for attempts in flight (up to the request timeout). Anything still
        running then is claimed again by a dispatcher once its lease ends."""
        self._stop.set()
        deadline = time.monotonic() + (self.config.timeout_s + 1 if grace_s is None else grace_s)
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))
            self._thread = None
        with self._lock:
            running = set(self._in_flight)
        wait_all(running, timeout=max(0.0, deadline - time.monotonic()))
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        self._client.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                fanned = self.fan_out()
                started = self._start_due()
            except Unavailable as exc:
                self._stop.wait(self.outage.failed(exc))
                continue
            except Exception:  # a store hiccup must not end the dispatcher
                log.exception("webhook dispatch failed")
                fanned = started = 0
            self.outage.recovered()
            if not fanned and not started:
                self._stop.wait(self.config.poll_s)

    def _start_due(self) -> int:
        """Claim due deliveries while a sender is free, and start each; returns how many
        were claimed (started or given back). Waits for a free sender, not for work."""
        claimed = 0
        while not self._stop.is_set():
            if not self._places.acquire(timeout=self.config.poll_s):
                return claimed  # every sender busy: fan out meanwhile, then come back
            try:
                delivery = self._claim()
            except BaseException:
                self._places.release()
                raise
            if delivery is None:
                self._places.release()
                return claimed
            claimed += 1
            with self._lock:
                full = self._busy.get(delivery.endpoint_id, 0) >= self.config.per_endpoint
                if not full:
                    self._busy[delivery.endpoint_id] = self._busy.get(delivery.endpoint_id, 0) + 1
            if full:
                self._places.release()
                until = utcnow() + timedelta(seconds=self.config.postpone_s)
                self.store.postpone_delivery(delivery.id, self.owner, until=until)
                continue
            assert self._pool is not None
            future = self._pool.submit(self._attempt_held, delivery)
            with self._lock:
                self._in_flight.add(future)
            future.add_done_callback(self._forget)
        return claimed

    def _attempt_held(self, delivery: Delivery) -> None:
        try:
            self.attempt(delivery)
        except Exception:
            log.exception("webhook delivery %s: attempt failed", delivery.id)
        finally:
            with self._lock:
                left = self._busy.get(delivery.endpoint_id, 1) - 1
                if left > 0:
                    self._busy[delivery.endpoint_id] = left
                else:
                    self._busy.pop(delivery.endpoint_id, None)
            self._places.release()

    def _forget(self, future: Future[None]) -> None:
        with self._lock:
            self._in_flight.discard(future)

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
        """Claim one due delivery and attempt it here; False when none was due."""
        delivery = self._claim()
        if delivery is None:
            return False
        self.attempt(delivery)
        return True

    def _claim(self) -> Delivery | None:
        cfg = self.config
        return self.store.claim_delivery(
            self.owner, lease_s=cfg.lease_s, max_attempts=len(cfg.schedule)
        )

    def attempt(self, delivery: Delivery) -> None:
        """Send a delivery this dispatcher holds, and log the outcome."""
        cfg = self.config
        now = utcnow()
        try:
            endpoint = self.store.get_endpoint(delivery.tenant, delivery.endpoint_id)
        except NotFound:
            self._finish(delivery, now, _Outcome(error="the endpoint was deleted"), 0.0, None)
            return
        if not endpoint.enabled:
            reason = endpoint.disabled_reason or "disabled"
            self._finish(delivery, now, _Outcome(error=f"the endpoint is {reason}"), 0.0, None)
            return
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
