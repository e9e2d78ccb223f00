"""Webhook endpoints and their delivery log, under ``/v1/webhooks``.

The secret is shown only in the answers to creation and rotation. Another tenant's
endpoint, event or delivery answers 404 exactly like an id that does not exist.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from postcall.api.deps import Tenant, components
from postcall.api.middleware import StrictJsonRoute
from postcall.api.schemas import error_responses, iso
from postcall.errors import FeatureDisabled
from postcall.store.base import Page
from postcall.webhook_service import WebhookService
from postcall.webhooks import EVENT_TYPES, Delivery, Endpoint

router = APIRouter(
    route_class=StrictJsonRoute,
    prefix="/v1/webhooks",
    tags=["webhooks"],
    responses=error_responses(401, 404, 422, 503),
)

Limit = Annotated[int, Query(ge=1, le=500, description="Items per page.")]
Cursor = Annotated[str | None, Query(description="nextCursor of the previous page.")]


async def webhook_service(request: Request) -> WebhookService:
    service = components(request).webhooks
    if service is None:
        raise FeatureDisabled("webhooks are not configured on this server")
    return service


Hooks = Annotated[WebhookService, Depends(webhook_service)]


class CreateEndpoint(BaseModel):
    """Body of POST /v1/webhooks/endpoints."""

    model_config = ConfigDict(extra="forbid")
    url: str = Field(
        description="http(s) URL of the receiver; it must resolve to a public "
        "address or one in POSTCALL_ALLOWED_NETWORKS."
    )
    events: list[str] | None = Field(
        None, description=f"Events to send (default all): {', '.join(EVENT_TYPES)}."
    )
    secret: str | None = Field(
        None, description="A whsec_ secret to sign with; default: a new one, returned once."
    )
    description: str = ""


class UpdateEndpoint(BaseModel):
    """Body of PATCH /v1/webhooks/endpoints/{id}: only what is given changes."""

    model_config = ConfigDict(extra="forbid")
    url: str | None = None
    events: list[str] | None = None
    enabled: bool | None = None
    description: str | None = None


class RotateSecret(BaseModel):
    """Body of POST /v1/webhooks/endpoints/{id}/rotate_secret (all optional)."""

    model_config = ConfigDict(extra="forbid")
    secret: str | None = Field(None, description="The new whsec_ secret; default: a new one.")
    overlap_seconds: float | None = Field(
        None,
        ge=0,
        le=7 * 86400,
        description="How long the old secret keeps signing too (both signatures are sent); "
        "default POSTCALL_WEBHOOK_ROTATION_OVERLAP_S.",
    )


def endpoint_view(e: Endpoint, *, with_secret: bool = False) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": e.id,
        "url": e.url,
        "events": list(e.events),
        "enabled": e.enabled,
        "disabledReason": e.disabled_reason,
        "description": e.description,
        "createdAt": iso(e.created_at),
        "updatedAt": iso(e.updated_at),
        "previousSecretExpiresAt": (
            iso(e.previous_expires_at) if e.previous_expires_at is not None else None
        ),
    }
    if with_secret:
        view["secret"] = e.secret
    return view


def delivery_view(d: Delivery) -> dict[str, Any]:
    return {
        "id": d.id,
        "eventId": d.event_id,
        "event": d.event_type,
        "endpointId": d.endpoint_id,
        "status": d.status.value,
        "attempts": [
            {
                "attempt": a.number,
                "at": iso(a.at),
                "succeeded": a.succeeded,
                "responseCode": a.response_code,
                "latencyMs": a.latency_ms,
                "error": a.error,
            }
            for a in d.log
        ],
        "nextAttemptAt": iso(d.next_attempt_at) if d.next_attempt_at else None,
        "createdAt": iso(d.created_at),
        "updatedAt": iso(d.updated_at),
    }


def _page(page: Page[Delivery]) -> dict[str, Any]:
    return {"data": [delivery_view(d) for d in page.items], "nextCursor": page.next_cursor}


@router.post("/endpoints", status_code=201, responses=error_responses(400))
def create_endpoint(body: CreateEndpoint, tenant: Tenant, hooks: Hooks) -> Any:
    """Create an endpoint; the answer holds its signing secret, shown only this once."""
    e = hooks.create_endpoint(
        tenant, body.url, events=body.events, secret=body.secret, description=body.description
    )
    return endpoint_view(e, with_secret=True)


@router.get("/endpoints")
def list_endpoints(tenant: Tenant, hooks: Hooks) -> Any:
    return {"data": [endpoint_view(e) for e in hooks.list_endpoints(tenant)]}


@router.get("/endpoints/{endpoint_id}")
def get_endpoint(endpoint_id: str, tenant: Tenant, hooks: Hooks) -> Any:
    return endpoint_view(hooks.get_endpoint(tenant, endpoint_id))


@router.patch("/endpoints/{endpoint_id}", responses=error_responses(400))
def update_endpoint(endpoint_id: str, body: UpdateEndpoint, tenant: Tenant, hooks: Hooks) -> Any:
    """Change url, events, description, or enable / disable the endpoint."""
    e = hooks.update_endpoint(
        tenant,
        endpoint_id,
        url=body.url,
        events=body.events,
        enabled=body.enabled,
        description=body.description,
    )
    return endpoint_view(e)


@router.delete("/endpoints/{endpoint_id}", status_code=204)
def delete_endpoint(endpoint_id: str, tenant: Tenant, hooks: Hooks) -> Response:
    hooks.delete_endpoint(tenant, endpoint_id)
    return Response(status_code=204)


@router.post("/endpoints/{endpoint_id}/rotate_secret")
def rotate_secret(
    endpoint_id: str,
    tenant: Tenant,
    hooks: Hooks,
    body: Annotated[RotateSecret | None, Body()] = None,
) -> Any:
    """A new secret, shown only this once; the old one keeps signing during the overlap."""
    body = body or RotateSecret()
    e = hooks.rotate_secret(tenant, endpoint_id, secret=body.secret, overlap_s=body.overlap_seconds)
    return endpoint_view(e, with_secret=True)


@router.get("/endpoints/{endpoint_id}/deliveries")
def endpoint_deliveries(
    endpoint_id: str, tenant: Tenant, hooks: Hooks, limit: Limit = 50, cursor: Cursor = None
) -> Any:
    """The endpoint's deliveries, newest first, each with its attempts."""
    return _page(hooks.endpoint_deliveries(tenant, endpoint_id, limit=limit, cursor=cursor))


@router.get("/events/{event_id}/deliveries")
def event_deliveries(
    event_id: str, tenant: Tenant, hooks: Hooks, limit: Limit = 50, cursor: Cursor = None
) -> Any:
    """Where one event (the ``webhook-id`` header) went, with every attempt."""
    return _page(hooks.event_deliveries(tenant, event_id, limit=limit, cursor=cursor))


@router.get("/deliveries/{delivery_id}")
def get_delivery(delivery_id: str, tenant: Tenant, hooks: Hooks) -> Any:
    return delivery_view(hooks.get_delivery(tenant, delivery_id))


@router.post("/deliveries/{delivery_id}/resend", status_code=202, responses=error_responses(409))
def resend(delivery_id: str, tenant: Tenant, hooks: Hooks) -> Any:
    """Send the delivery again now, with the same webhook-id."""
    return delivery_view(hooks.resend(tenant, delivery_id))
