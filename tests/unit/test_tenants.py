"""Tenants never see each other: every route that takes an object id answers another
tenant's id exactly as an id that does not exist (404).

``CASES`` must name every such route of the app (the first test fails when a route has
no case). Adding one is a few lines: a function from ``Ids`` (tenant A's objects, or
ids that exist nowhere) to the request (method, URL, keyword arguments for httpx).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from starlette.routing import Route

from postcall import wiring
from postcall.api.app import create_app
from postcall.api.deps import hash_key
from postcall.domain import Voiceprint, new_id, utcnow
from postcall.settings import Settings
from postcall.transcripts import LINK_KIND
from tests import media
from tests.fakes import ScriptedEngine
from tests.unit.test_api import tone

KEY_A, KEY_B = "pc_key_of_acme", "pc_key_of_globex"


@dataclass(frozen=True)
class Ids:
    recording: str
    transcription: str
    token: Callable[[str], str]
    """A valid download token for ``transcription``, signed for the given tenant."""
    endpoint: str = "we_none"
    event: str = "evt_none"
    delivery: str = "msg_none"
    voiceprint: str = "vp_none"


Request = tuple[str, str, dict[str, Any]]
Case = Callable[[Ids], Request]

CASES: dict[tuple[str, str], Case] = {
    # --- native -------------------------------------------------------------------
    ("GET", "/v1/recordings/{recording_id}"): lambda i: (
        "GET",
        f"/v1/recordings/{i.recording}",
        {},
    ),
    ("DELETE", "/v1/recordings/{recording_id}"): lambda i: (
        "DELETE",
        f"/v1/recordings/{i.recording}",
        {},
    ),
    ("POST", "/v1/recordings/{recording_id}/transcribe"): lambda i: (
        "POST",
        f"/v1/recordings/{i.recording}/transcribe",
        {"json": {"language": "en"}},
    ),
    ("GET", "/v1/recordings/{recording_id}/transcriptions"): lambda i: (
        "GET",
        f"/v1/recordings/{i.recording}/transcriptions",
        {},
    ),
    ("GET", "/v1/transcriptions/{transcription_id}"): lambda i: (
        "GET",
        f"/v1/transcriptions/{i.transcription}",
        {},
    ),
    ("GET", "/v1/transcriptions/{transcription_id}/transcript"): lambda i: (
        "GET",
        f"/v1/transcriptions/{i.transcription}/transcript",
        {"params": {"format": "recall"}},
    ),
    ("PATCH", "/v1/recordings/{recording_id}"): lambda i: (
        "PATCH",
        f"/v1/recordings/{i.recording}",
        {"json": {"metadata": {"title": "renamed"}}},
    ),
    ("GET", "/v1/recordings/{recording_id}/media"): lambda i: (
        "GET",
        f"/v1/recordings/{i.recording}/media",
        {"headers": {"Range": "bytes=0-99"}},
    ),
    ("GET", "/v1/recordings/{recording_id}/media_link"): lambda i: (
        "GET",
        f"/v1/recordings/{i.recording}/media_link",
        {},
    ),
    ("POST", "/v1/transcriptions/{transcription_id}/retry"): lambda i: (
        "POST",
        f"/v1/transcriptions/{i.transcription}/retry",
        {},
    ),
    ("DELETE", "/v1/transcriptions/{transcription_id}"): lambda i: (
        "DELETE",
        f"/v1/transcriptions/{i.transcription}",
        {},
    ),
    # --- Recall-style ---------------------------------------------------------------
    ("POST", "/api/v1/recording/{recording_id}/create_transcript/"): lambda i: (
        "POST",
        f"/api/v1/recording/{i.recording}/create_transcript/",
        {"json": {"provider": {"postcall": {}}}},
    ),
    ("GET", "/api/v1/transcript/{transcript_id}/"): lambda i: (
        "GET",
        f"/api/v1/transcript/{i.transcription}/",
        {},
    ),
    ("DELETE", "/api/v1/transcript/{transcript_id}/"): lambda i: (
        "DELETE",
        f"/api/v1/transcript/{i.transcription}/",
        {},
    ),
    # A link needs no key; the other tenant signs one (it cannot sign as A) for A's id.
    ("GET", "/api/v1/transcript/{transcript_id}/download/"): lambda i: (
        "GET",
        f"/api/v1/transcript/{i.transcription}/download/",
        {"params": {"token": i.token("globex")}},
    ),
    # --- voiceprints -------------------------------------------------------------------
    ("GET", "/v1/voiceprints/{voiceprint_id}"): lambda i: (
        "GET",
        f"/v1/voiceprints/{i.voiceprint}",
        {"params": {"include_embedding": "true"}},
    ),
    ("DELETE", "/v1/voiceprints/{voiceprint_id}"): lambda i: (
        "DELETE",
        f"/v1/voiceprints/{i.voiceprint}",
        {},
    ),
    # --- webhooks ---------------------------------------------------------------------
    ("GET", "/v1/webhooks/endpoints/{endpoint_id}"): lambda i: (
        "GET",
        f"/v1/webhooks/endpoints/{i.endpoint}",
        {},
    ),
    ("PATCH", "/v1/webhooks/endpoints/{endpoint_id}"): lambda i: (
        "PATCH",
        f"/v1/webhooks/endpoints/{i.endpoint}",
        {"json": {"enabled": True}},
    ),
    ("DELETE", "/v1/webhooks/endpoints/{endpoint_id}"): lambda i: (
        "DELETE",
        f"/v1/webhooks/endpoints/{i.endpoint}",
        {},
    ),
    ("POST", "/v1/webhooks/endpoints/{endpoint_id}/rotate_secret"): lambda i: (
        "POST",
        f"/v1/webhooks/endpoints/{i.endpoint}/rotate_secret",
        {"json": {}},
    ),
    ("GET", "/v1/webhooks/endpoints/{endpoint_id}/deliveries"): lambda i: (
        "GET",
        f"/v1/webhooks/endpoints/{i.endpoint}/deliveries",
        {},
    ),
    ("GET", "/v1/webhooks/events/{event_id}/deliveries"): lambda i: (
        "GET",
        f"/v1/webhooks/events/{i.event}/deliveries",
        {},
    ),
    ("GET", "/v1/webhooks/deliveries/{delivery_id}"): lambda i: (
        "GET",
        f"/v1/webhooks/deliveries/{i.delivery}",
        {},
    ),
    ("POST", "/v1/webhooks/deliveries/{delivery_id}/resend"): lambda i: (
        "POST",
        f"/v1/webhooks/deliveries/{i.delivery}/resend",
        {},
    ),
}


def all_routes(app: Any) -> Iterator[tuple[str, set[str]]]:
    """(path, methods) of every route of the app, through included routers (which newer
    FastAPI keeps as nested objects rather than copying their routes into the app)."""
    for route in app.routes:
        nested = getattr(route, "effective_route_contexts", None)
        if nested is not None:
            yield from ((ctx.path, set(ctx.methods or ())) for ctx in nested())
        elif isinstance(route, APIRoute | Route):
            yield route.path, set(route.methods or ())


def id_routes(app: Any) -> set[tuple[str, str]]:
    """(method, path) of every route whose path takes a parameter."""
    return {(m, path) for path, methods in all_routes(app) if "{" in path for m in methods}


@dataclass
class World:
    a: TestClient
    b: TestClient
    comps: wiring.Components
    ids: Ids
    missing: Ids


@pytest.fixture
def world(data_dir: Path, tmp_path: Path) -> Iterator[World]:
    settings = Settings(data_dir=data_dir, auth="required")
    comps = wiring.build(settings, with_worker=True, engine=ScriptedEngine())
    comps.store.add_api_key(hash_key(KEY_A), name="a", tenant="acme")
    comps.store.add_api_key(hash_key(KEY_B), name="b", tenant="globex")
    app = create_app(comps)
    a = TestClient(app, headers={"Authorization": f"Bearer {KEY_A}"})
    b = TestClient(app, headers={"Authorization": f"Bearer {KEY_B}"})
    wav = media.write_audio(tmp_path / "t.wav", tone(2)).read_bytes()
    rec = a.post("/v1/recordings", files={"file": ("t.wav", io.BytesIO(wav))}).json()["id"]
    tr = a.post(f"/v1/recordings/{rec}/transcribe").json()["transcriptionId"]
    assert comps.workers is not None and comps.workers.workers[0].run(burst=True) == 1
    # Tenant B has objects of its own, so "nothing at all" is not what makes its 404s.
    b.post("/v1/recordings", files={"file": ("t.wav", io.BytesIO(wav))})

    def token_for(transcription: str) -> Callable[[str], str]:
        signer = comps.transcripts.signer
        return lambda tenant: signer.sign(LINK_KIND, tenant, transcription, ttl_s=600)

    # A webhook endpoint of A's (a public address: nothing is sent, the dispatcher is not
    # started) and the delivery of A's transcript.done event to it.
    endpoint = a.post("/v1/webhooks/endpoints", json={"url": "https://93.184.215.14/hook"})
    assert endpoint.status_code == 201, endpoint.text
    endpoint_id = endpoint.json()["id"]
    assert comps.dispatcher is not None and comps.dispatcher.fan_out() >= 1
    deliveries = a.get(f"/v1/webhooks/endpoints/{endpoint_id}/deliveries").json()["data"]
    delivery = deliveries[0]
    now = utcnow()
    print_of_a = comps.store.put_voiceprint(
        Voiceprint(new_id("vp"), "acme", "u1", "Ann", (0.6, 0.8), "m", 9.0, "sample", now, now)
    )
    ids = Ids(
        rec,
        tr,
        token_for(tr),
        endpoint_id,
        delivery["eventId"],
        delivery["id"],
        print_of_a.id,
    )
    gone = new_id("tr")
    missing = Ids(
        new_id("rec"),
        gone,
        token_for(gone),
        new_id("we"),
        new_id("evt"),
        new_id("msg"),
        new_id("vp"),
    )
    yield World(a, b, comps, ids, missing)
    comps.store.close()


def test_every_route_with_an_object_id_has_a_cross_tenant_case(world: World) -> None:
    assert len(list(all_routes(world.a.app))) > len(CASES)  # the walk sees the app's routes
    routes = id_routes(world.a.app)
    uncovered = routes - set(CASES)
    assert not uncovered, f"add a cross-tenant case to CASES for: {sorted(uncovered)}"
    stale = set(CASES) - routes
    assert not stale, f"CASES names routes the app does not have: {sorted(stale)}"


def _normalized(response: Any, ids: Ids) -> Any:
    text = response.text
    for value, mark in (
        (ids.recording, "<rec>"),
        (ids.transcription, "<tr>"),
        (ids.endpoint, "<we>"),
        (ids.event, "<evt>"),
        (ids.delivery, "<msg>"),
        (ids.voiceprint, "<vp>"),
    ):
        text = text.replace(value, mark)
    return response.status_code, text


@pytest.mark.parametrize("route", sorted(CASES), ids=lambda r: f"{r[0]} {r[1]}")
def test_another_tenants_id_is_answered_as_a_missing_one(
    world: World, route: tuple[str, str]
) -> None:
    case = CASES[route]
    method, url, kwargs = case(world.ids)
    assert method == route[0]
    crossed = world.b.request(method, url, **kwargs)
    m_method, m_url, m_kwargs = case(world.missing)
    if "token" in m_kwargs.get("params", {}):  # a link to a missing object, signed for B
        m_kwargs = {"params": {"token": world.missing.token("globex")}}
    missing = world.b.request(m_method, m_url, **m_kwargs)
    assert crossed.status_code == 404, crossed.text
    assert _normalized(crossed, world.ids) == _normalized(missing, world.missing)
    # And tenant A's objects are untouched.
    a = world.a
    assert a.get(f"/v1/recordings/{world.ids.recording}").status_code == 200
    assert a.get(f"/v1/transcriptions/{world.ids.transcription}").json()["status"] == "completed"
    listed = a.get(f"/v1/recordings/{world.ids.recording}/transcriptions").json()["data"]
    assert len(listed) == 1
    assert a.get(f"/v1/voiceprints/{world.ids.voiceprint}").status_code == 200


def test_the_owner_reaches_every_case(world: World) -> None:
    """The cases are real requests: as tenant A (signing as A) they succeed."""
    own = replace(world.ids, token=world.ids.token)
    for route, case in sorted(CASES.items()):
        if route[0] == "DELETE":
            continue
        method, url, kwargs = case(own)
        if "token" in kwargs.get("params", {}):
            kwargs = {"params": {"token": own.token("acme")}}
        r = world.a.request(method, url, **kwargs)
        if route[1].endswith("/retry"):  # reached, but only a failed transcription reruns
            assert r.status_code == 409 and r.json()["error"]["code"] == "not_failed", r.text
            continue
        assert r.status_code < 300, (route, r.status_code, r.text)


def test_listings_show_only_the_callers_objects(world: World) -> None:
    b = world.b
    recordings = b.get("/v1/recordings").json()["data"]
    assert world.ids.recording not in {r["id"] for r in recordings}
    assert len(recordings) == 1
    assert b.get("/api/v1/transcript/").json()["results"] == []
    page = b.get("/api/v1/transcript/", params={"recording_id": world.ids.recording}).json()
    assert page["results"] == []
    assert len(world.a.get("/api/v1/transcript/").json()["results"]) == 1
    # Voiceprints: B lists none of A's, and deleting "u1" for B leaves A's print.
    assert b.get("/v1/voiceprints").json()["data"] == []
    assert b.get("/v1/voiceprints", params={"participant_id": "u1"}).json()["data"] == []
    assert b.delete("/v1/voiceprints", params={"participant_id": "u1"}).json() == {"deleted": 0}
    mine = world.a.get("/v1/voiceprints").json()["data"]
    assert [v["id"] for v in mine] == [world.ids.voiceprint]
