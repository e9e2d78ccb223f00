"""The webhook API in-process (real SQLite store): endpoints, validation, the delivery
log, and tenant isolation on every route that takes an id."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from postcall import wiring
from postcall.api import webhooks as webhook_routes
from postcall.api.app import create_app
from postcall.api.deps import hash_key
from postcall.settings import Settings
from postcall.webhooks import EVENT_TYPES
from tests import media

KEY, OTHER = "key-of-tenant-a", "key-of-tenant-b"
HOOK = "http://127.0.0.1:9/hook"


@pytest.fixture
def api(data_dir: Path) -> Iterator[tuple[TestClient, TestClient, wiring.Components]]:
    settings = Settings(data_dir=data_dir, api_keys=KEY, allowed_networks="127.0.0.0/8")
    comps = wiring.build(settings, with_worker=False)
    comps.store.add_api_key(hash_key(OTHER), name="b", tenant="tenant-b")
    app = create_app(comps)
    a, b = TestClient(app), TestClient(app)
    a.headers["Authorization"] = f"Bearer {KEY}"
    b.headers["Authorization"] = f"Bearer {OTHER}"
    yield a, b, comps
    comps.store.close()


def wav(tmp: Path) -> bytes:
    t = np.arange(16000) / 16000
    tone = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    return media.write_audio(tmp / "tone.wav", tone).read_bytes()


def create(client: TestClient, **body: Any) -> Any:
    r = client.post("/v1/webhooks/endpoints", json={"url": HOOK, **body})
    assert r.status_code == 201, r.text
    return r.json()


def test_endpoint_lifecycle(api: Any) -> None:
    a, _, _ = api
    made = create(a, description="crm")
    assert made["id"].startswith("we_") and made["secret"].startswith("whsec_")
    assert made["events"] == list(EVENT_TYPES) and made["enabled"] is True
    got = a.get(f"/v1/webhooks/endpoints/{made['id']}").json()
    assert "secret" not in got and got["url"] == HOOK
    assert [e["id"] for e in a.get("/v1/webhooks/endpoints").json()["data"]] == [made["id"]]
    r = a.patch(
        f"/v1/webhooks/endpoints/{made['id']}",
        json={"events": ["transcript.failed"], "enabled": False},
    )
    assert r.status_code == 200, r.text
    assert r.json()["events"] == ["transcript.failed"] and r.json()["enabled"] is False
    rotated = a.post(f"/v1/webhooks/endpoints/{made['id']}/rotate_secret").json()
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != made["secret"]
    assert rotated["previousSecretExpiresAt"] is not None
    assert a.delete(f"/v1/webhooks/endpoints/{made['id']}").status_code == 204
    assert a.get(f"/v1/webhooks/endpoints/{made['id']}").status_code == 404


def test_a_chosen_secret_is_kept(api: Any) -> None:
    a, _, _ = api
    secret = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    assert create(a, secret=secret)["secret"] == secret


@pytest.mark.parametrize(
    ("body", "code", "needle"),
    [
        ({"events": ["transcript.exploded"]}, "invalid_webhook", "transcript.done"),
        ({"events": []}, "invalid_webhook", "recording.done"),
        ({"url": "http://169.254.169.254/latest/meta-data/"}, "url_not_allowed", "169.254"),
        ({"url": "http://0x7f.1:9/"}, "url_not_allowed", "non-public"),
        ({"url": "http://[::ffff:10.0.0.1]/"}, "url_not_allowed", "non-public"),
        ({"url": "http://100.64.0.7/"}, "url_not_allowed", "non-public"),
        ({"url": "ftp://example.com/"}, "url_not_allowed", "http"),
        ({"secret": "not-a-secret"}, "invalid_webhook", "whsec_"),
    ],
)
def test_bad_endpoints_are_refused_with_400(
    data_dir: Path, body: dict[str, Any], code: str, needle: str
) -> None:
    settings = Settings(data_dir=data_dir, api_keys=KEY)  # no allowed networks
    comps = wiring.build(settings, with_worker=False)
    client = TestClient(create_app(comps))
    client.headers["Authorization"] = f"Bearer {KEY}"
    r = client.post("/v1/webhooks/endpoints", json={"url": "https://1.1.1.1/hook", **body})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == code
    assert needle in r.json()["error"]["message"]
    comps.store.close()


def test_the_delivery_log_and_resend(api: Any, tmp_path: Path) -> None:
    a, _, comps = api
    ep = create(a, events=["recording.done"])
    r = a.post("/v1/recordings", files={"file": ("a.wav", io.BytesIO(wav(tmp_path)))})
    assert r.status_code == 201, r.text
    assert comps.dispatcher is not None
    assert comps.dispatcher.fan_out() == 1
    (d,) = a.get(f"/v1/webhooks/endpoints/{ep['id']}/deliveries").json()["data"]
    assert d["event"] == "recording.done" and d["status"] == "pending" and d["attempts"] == []
    assert d["eventId"].startswith("evt_")
    by_event = a.get(f"/v1/webhooks/events/{d['eventId']}/deliveries").json()["data"]
    assert [x["id"] for x in by_event] == [d["id"]]
    assert a.get(f"/v1/webhooks/deliveries/{d['id']}").json()["id"] == d["id"]
    again = a.post(f"/v1/webhooks/deliveries/{d['id']}/resend")
    assert again.status_code == 202 and again.json()["status"] == "pending"
    assert a.get("/v1/webhooks/events/evt_nope/deliveries").status_code == 404
    assert a.get(f"/v1/webhooks/endpoints/{ep['id']}/deliveries?cursor=x").status_code == 422


def test_no_webhook_route_shows_another_tenants_objects(api: Any, tmp_path: Path) -> None:
    a, b, comps = api
    ep = create(a)
    a.post("/v1/recordings", files={"file": ("a.wav", io.BytesIO(wav(tmp_path)))})
    comps.dispatcher.fan_out()
    (d,) = a.get(f"/v1/webhooks/endpoints/{ep['id']}/deliveries").json()["data"]
    ids = {"endpoint_id": ep["id"], "event_id": d["eventId"], "delivery_id": d["id"]}
    bodies: dict[tuple[str, str], Any] = {
        ("PATCH", "/v1/webhooks/endpoints/{endpoint_id}"): {"enabled": False},
        ("POST", "/v1/webhooks/endpoints/{endpoint_id}/rotate_secret"): {},
    }
    checked = 0
    for route in webhook_routes.router.routes:
        assert isinstance(route, APIRoute)
        if "{" not in route.path:
            continue
        for method in route.methods:
            path = route.path.format(**ids)
            missing = route.path.format(**{k: v[:3] + "0" * 32 for k, v in ids.items()})
            body = bodies.get((method, route.path))
            theirs = b.request(method, path, json=body)
            nothing = b.request(method, missing, json=body)
            assert theirs.status_code == 404, (method, path, theirs.text)
            assert theirs.json()["error"]["code"] == nothing.json()["error"]["code"]
            assert nothing.status_code == 404
            checked += 1
    assert checked == 8  # every route with an id: a new one is covered automatically
    assert b.get("/v1/webhooks/endpoints").json()["data"] == []
    # ... and tenant a's objects are untouched.
    got = a.get(f"/v1/webhooks/endpoints/{ep['id']}").json()
    assert got["enabled"] is True and got["url"] == HOOK
    assert a.get(f"/v1/webhooks/deliveries/{d['id']}").json()["status"] == "pending"
