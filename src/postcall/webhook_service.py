"""Webhook use cases: endpoints (create, update, rotate, delete) and the delivery log.

Everything is tenant-scoped: another tenant's endpoint, event or delivery is
``NotFound`` exactly like an id that does not exist.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from postcall.domain import new_id, utcnow
from postcall.errors import InvalidWebhook, NotFound
from postcall.outbound import OutboundPolicy
from postcall.store.base import Page, Store
from postcall.webhooks import EVENT_TYPES, Delivery, Endpoint, new_secret, secret_key

MAX_URL = 2048
MAX_DESCRIPTION = 500


class WebhookService:
    """Manages a tenant's webhook endpoints and reads their deliveries."""

    def __init__(
        self,
        store: Store,
        policy: OutboundPolicy,
        *,
        rotation_overlap_s: float = 86400.0,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.policy = policy
        self.rotation_overlap_s = rotation_overlap_s
        self._clock = clock

    # --- validation ------------------------------------------------------------------
    def _url(self, url: str) -> str:
        url = url.strip()
        if not url or len(url) > MAX_URL:
            raise InvalidWebhook(f"url must be 1-{MAX_URL} characters", field="url")
        self.policy.check_url(url)
        return url

    @staticmethod
    def _events(events: Sequence[str] | None) -> tuple[str, ...]:
        if events is None:
            return EVENT_TYPES
        supported = ", ".join(EVENT_TYPES)
        if not events:
            raise InvalidWebhook(f"events must name at least one of: {supported}", field="events")
        unknown = [e for e in events if e not in EVENT_TYPES]
        if unknown:
            raise InvalidWebhook(
                f"unknown event {unknown[0]!r}; supported events: {supported}", field="events"
            )
        return tuple(dict.fromkeys(events))

    @staticmethod
    def _secret(secret: str | None) -> str:
        if secret is None:
            return new_secret()
        try:
            secret_key(secret)
        except ValueError as exc:
            raise InvalidWebhook(str(exc), field="secret") from None
        return secret

    @staticmethod
    def _description(description: str) -> str:
        if len(description) > MAX_DESCRIPTION:
            raise InvalidWebhook(
                f"description is longer than {MAX_DESCRIPTION} characters", field="description"
            )
        return description

    # --- endpoints ------------------------------------------------------------------
    def create_endpoint(
        self,
        tenant: str,
        url: str,
        *,
        events: Sequence[str] | None = None,
        secret: str | None = None,
        description: str = "",
    ) -> Endpoint:
        """A new endpoint; without ``secret`` a fresh ``whsec_`` one is made."""
        now = self._clock()
        endpoint = Endpoint(
            id=new_id("we"),
            tenant=tenant,
            url=self._url(url),
            events=self._events(events),
            secret=self._secret(secret),
            created_at=now,
            updated_at=now,
            description=self._description(description),
        )
        self.store.add_endpoint(endpoint)
        return endpoint

    def list_endpoints(self, tenant: str) -> list[Endpoint]:
        return self.store.list_endpoints(tenant)

    def get_endpoint(self, tenant: str, endpoint_id: str) -> Endpoint:
        return self.store.get_endpoint(tenant, endpoint_id)

    def update_endpoint(
        self,
        tenant: str,
        endpoint_id: str,
        *,
        url: str | None = None,
        events: Sequence[str] | None = None,
        enabled: bool | None = None,
        description: str | None = None,
    ) -> Endpoint:
        """Change what is given; enabling an endpoint clears its disabled reason."""
        current = self.store.get_endpoint(tenant, endpoint_id)
        changed = replace(
            current,
            url=current.url if url is None else self._url(url),
            events=current.events if events is None else self._events(events),
            description=(
                current.description if description is None else self._description(description)
            ),
            updated_at=self._clock(),
        )
        if enabled is not None:
            changed = replace(
                changed, enabled=enabled, disabled_reason=None if enabled else "disabled by API"
            )
        self.store.save_endpoint(changed)
        return changed

    def delete_endpoint(self, tenant: str, endpoint_id: str) -> None:
        self.store.delete_endpoint(tenant, endpoint_id)

    def rotate_secret(
        self,
        tenant: str,
        endpoint_id: str,
        *,
        secret: str | None = None,
        overlap_s: float | None = None,
    ) -> Endpoint:
        """A new secret; the old one keeps signing too (both signatures are sent) for
        ``overlap_s`` seconds, so receivers can switch without losing an event."""
        current = self.store.get_endpoint(tenant, endpoint_id)
        now = self._clock()
        overlap = self.rotation_overlap_s if overlap_s is None else overlap_s
        rotated = replace(
            current,
            secret=self._secret(secret),
            previous_secret=current.secret if overlap > 0 else None,
            previous_expires_at=now + timedelta(seconds=overlap) if overlap > 0 else None,
            updated_at=now,
        )
        self.store.save_endpoint(rotated)
        return rotated

    # --- deliveries -------------------------------------------------------------------
    def endpoint_deliveries(
        self, tenant: str, endpoint_id: str, *, limit: int, cursor: str | None
    ) -> Page[Delivery]:
        self.store.get_endpoint(tenant, endpoint_id)
        return self.store.list_deliveries(
            tenant, endpoint_id=endpoint_id, limit=limit, cursor=cursor
        )

    def event_deliveries(
        self, tenant: str, event_id: str, *, limit: int, cursor: str | None
    ) -> Page[Delivery]:
        """An event's deliveries; ``NotFound`` for an event this tenant has none of."""
        page = self.store.list_deliveries(tenant, event_id=event_id, limit=limit, cursor=cursor)
        if cursor is None and not page.items:
            raise NotFound(f"no deliveries of event {event_id!r}")
        return page

    def get_delivery(self, tenant: str, delivery_id: str) -> Delivery:
        return self.store.get_delivery(tenant, delivery_id)

    def resend(self, tenant: str, delivery_id: str) -> Delivery:
        """Send a delivery again now (a new series of attempts; the log is kept)."""
        return self.store.resend(tenant, delivery_id)
