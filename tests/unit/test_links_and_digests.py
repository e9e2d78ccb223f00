"""Signed link tokens and the streamed request-body digest of Idempotency-Key."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from postcall.api.idempotency import BodyDigest
from postcall.errors import Forbidden
from postcall.signing import LinkSigner


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def test_token_round_trip_and_expiry() -> None:
    clock = Clock()
    signer = LinkSigner(lambda: "k", clock=clock)
    token = signer.sign("transcript", "acme", "tr_1", ttl_s=60)
    target = signer.verify(token, "transcript")
    assert (target.tenant, target.object_id) == ("acme", "tr_1")
    clock.now += 59
    signer.verify(token, "transcript")
    clock.now += 1
    with pytest.raises(Forbidden, match="expired"):
        signer.verify(token, "transcript")


def test_token_refused_for_another_kind_or_key() -> None:
    token = LinkSigner(lambda: "k").sign("transcript", "acme", "tr_1", ttl_s=60)
    with pytest.raises(Forbidden):
        LinkSigner(lambda: "k").verify(token, "recording")
    with pytest.raises(Forbidden):
        LinkSigner(lambda: "other").verify(token, "transcript")


def test_secret_is_fetched_once_and_lazily() -> None:
    calls: list[int] = []

    def secret() -> str:
        calls.append(1)
        return "k"

    signer = LinkSigner(secret)
    assert calls == []
    signer.verify(signer.sign("t", "a", "x", ttl_s=5), "t")
    assert calls == [1]


@given(st.integers(min_value=0), st.integers(min_value=0, max_value=255))
def test_any_changed_byte_voids_a_token(position: int, value: int) -> None:
    signer = LinkSigner(lambda: "k", clock=lambda: 1_800_000_000.0)
    token = signer.sign("transcript", "acme", "tr_1", ttl_s=60)
    i = position % len(token)
    changed = token[:i] + chr(value) + token[i + 1 :]
    if changed == token:
        return
    with pytest.raises(Forbidden):
        signer.verify(changed, "transcript")


@given(
    st.binary(max_size=300),
    st.lists(st.integers(min_value=0, max_value=300), max_size=6),
    st.sampled_from([b"", b"-", b"XyZ", b"----boundary0123456789"]),
)
def test_digest_is_the_same_however_the_body_is_split(
    body: bytes, cuts: list[int], blank: bytes
) -> None:
    whole = BodyDigest(blank)
    whole.update(body)
    pieces = BodyDigest(blank)
    points = sorted({min(c, len(body)) for c in cuts})
    for start, end in zip([0, *points], [*points, len(body)], strict=True):
        pieces.update(body[start:end])
    assert pieces.hexdigest() == whole.hexdigest()
    expected = body.replace(blank, b"") if blank else body
    assert whole.hexdigest() == hashlib.sha256(expected).hexdigest()


def test_digest_ignores_only_the_boundary() -> None:
    def digest(body: bytes, boundary: bytes) -> str:
        d = BodyDigest(boundary)
        for i in range(0, len(body), 7):
            d.update(body[i : i + 7])
        return d.hexdigest()

    form = b'--{b}\r\ncontent-disposition: form-data; name="file"\r\n\r\nDATA\r\n--{b}--\r\n'
    one = form.replace(b"{b}", b"aaaa1111")
    two = form.replace(b"{b}", b"bbbb2222")
    assert digest(one, b"aaaa1111") == digest(two, b"bbbb2222")
    assert digest(one, b"aaaa1111") != digest(two.replace(b"DATA", b"DATB"), b"bbbb2222")
