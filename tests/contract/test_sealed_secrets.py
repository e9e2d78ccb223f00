"""Webhook secrets sealed at rest with POSTCALL_SECRET_KEY, against every store backend."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
import redis

from postcall.sealing import SealError, SecretBox
from postcall.store.base import Store
from postcall.store.redis import RedisStore
from postcall.store.sqlite import SqliteStore
from postcall.webhooks import new_secret
from tests.contract.test_store import Clock, StoreFactory
from tests.contract.test_webhook_store import endpoint


def at_rest(store: Store) -> str:
    """Everything the backend holds, as text (what someone with the disk or Redis sees)."""
    if isinstance(store, SqliteStore):
        files = [Path(store.path), Path(store.path + "-wal")]
        return "".join(f.read_bytes().decode("latin-1") for f in files if f.exists())
    assert isinstance(store, RedisStore)
    client = store._client
    assert isinstance(client, redis.Redis)
    out = []
    for key in client.scan_iter("*"):
        if client.type(key) == "hash":
            out += [f"{k}={v}" for k, v in client.hgetall(key).items()]
    return "\n".join(out)


def test_secrets_are_sealed_at_rest_and_read_back(make_store: StoreFactory, clock: Clock) -> None:
    sealed = make_store(clock)
    sealed.seal_secrets_with(SecretBox("the-operators-key"))
    e = endpoint()
    sealed.add_endpoint(e)
    rotated = replace(
        e,
        secret=new_secret(),
        previous_secret=e.secret,
        previous_expires_at=e.created_at + timedelta(hours=1),
    )
    sealed.save_endpoint(rotated)
    assert sealed.get_endpoint("t1", e.id) == rotated
    assert sealed.list_endpoints("t1") == [rotated]
    raw = at_rest(sealed)
    assert "sealed:v1:" in raw
    for secret in (rotated.secret, e.secret):
        assert secret not in raw and secret.removeprefix("whsec_") not in raw

    # Without the key, or with another one, a sealed secret does not open.
    for box in (None, SecretBox("another-key")):
        other = make_store(clock)
        other.seal_secrets_with(box)
        with pytest.raises(SealError):
            other.get_endpoint("t1", e.id)


def test_secrets_kept_in_the_clear_before_keep_working(
    make_store: StoreFactory, clock: Clock
) -> None:
    clear = make_store(clock)
    e = endpoint()
    clear.add_endpoint(e)
    assert e.secret in at_rest(clear)

    sealed = make_store(clock)
    sealed.seal_secrets_with(SecretBox("the-operators-key"))
    assert sealed.get_endpoint("t1", e.id) == e  # read as it was stored
    sealed.save_endpoint(replace(e, description="renamed"))  # sealed when next saved
    assert sealed.get_endpoint("t1", e.id).secret == e.secret
    # Now stored sealed: without the key it no longer reads. (SQLite may still hold the
    # old row in free pages until the file is vacuumed; Redis holds only the new one.)
    without = make_store(clock)
    with pytest.raises(SealError):
        without.get_endpoint("t1", e.id)
    if isinstance(sealed, RedisStore):
        assert e.secret not in at_rest(sealed)


def test_a_sealed_secret_is_bound_to_its_endpoint() -> None:
    box = SecretBox("k")
    stored = box.seal("whsec_abc", "webhook-endpoint:t1:we_1")
    assert box.open(stored, "webhook-endpoint:t1:we_1") == "whsec_abc"
    with pytest.raises(SealError):
        box.open(stored, "webhook-endpoint:t2:we_1")
    assert box.seal("whsec_abc", "c") != box.seal("whsec_abc", "c")  # a fresh nonce each time
