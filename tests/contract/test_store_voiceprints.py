"""Voiceprints in the store (``postcall.store.voiceprints``) on every backend."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from postcall.domain import Voiceprint, new_id
from postcall.errors import NotFound
from postcall.store.base import Store

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def voiceprint(
    participant: str = "u1",
    tenant: str = "t1",
    *,
    model: str = "enc-1",
    offset: int = 0,
    value: float = 0.25,
) -> Voiceprint:
    at = T0 + timedelta(seconds=offset)
    return Voiceprint(
        id=new_id("vp"),
        tenant=tenant,
        participant_id=participant,
        name=f"Name of {participant}",
        embedding=(value, 0.5, -0.125, 0.0625),
        model=model,
        seconds=12.5,
        source="recording:rec_1",
        created_at=at,
        updated_at=at,
    )


def test_a_voiceprint_is_kept_as_given(store: Store) -> None:
    v = voiceprint("ü:1 ✓")
    stored = store.put_voiceprint(v)
    assert stored == v
    assert store.get_voiceprint("t1", v.id) == v
    assert store.find_voiceprint("t1", "ü:1 ✓", "enc-1") == v
    assert store.find_voiceprint("t1", "ü:1 ✓", "enc-2") is None
    assert store.find_voiceprint("t1", "u2", "enc-1") is None


def test_a_participants_print_of_a_model_is_replaced_in_place(store: Store) -> None:
    first = store.put_voiceprint(voiceprint())
    later = voiceprint(offset=60, value=0.75)
    later = replace(later, name="Renamed", seconds=30.0, source="sample")
    stored = store.put_voiceprint(later)
    assert stored.id == first.id and stored.created_at == first.created_at
    assert stored.updated_at == later.updated_at
    assert stored.embedding == later.embedding and stored.seconds == 30.0
    assert stored.name == "Renamed" and stored.source == "sample"
    assert store.get_voiceprint("t1", first.id) == stored
    with pytest.raises(NotFound):
        store.get_voiceprint("t1", later.id)
    assert [v.id for v in store.list_voiceprints("t1", limit=10, cursor=None).items] == [first.id]
    # Another model's print is a print of its own.
    other = store.put_voiceprint(voiceprint(model="enc-2", offset=61))
    assert other.id != first.id
    assert {v.model for v in store.list_voiceprints("t1", limit=10, cursor=None).items} == {
        "enc-1",
        "enc-2",
    }


def test_listing_pages_newest_first_and_filters_by_participant(store: Store) -> None:
    made = [store.put_voiceprint(voiceprint(f"u{i}", offset=i)) for i in range(5)]
    made.append(store.put_voiceprint(voiceprint("u1", model="enc-2", offset=10)))
    seen, cursor = [], None
    while True:
        page = store.list_voiceprints("t1", limit=2, cursor=cursor)
        seen += [v.id for v in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == [v.id for v in sorted(made, key=lambda v: v.created_at, reverse=True)]
    mine = store.list_voiceprints("t1", limit=50, cursor=None, participant_id="u1").items
    assert [v.id for v in mine] == [made[5].id, made[1].id]
    assert [v.id for v in store.voiceprints_of_model("t1", "enc-2")] == [made[5].id]
    assert len(store.voiceprints_of_model("t1", "enc-1")) == 5


def test_deleting_one_and_a_participants_prints(store: Store) -> None:
    a = store.put_voiceprint(voiceprint("u1"))
    b = store.put_voiceprint(voiceprint("u1", model="enc-2", offset=1))
    c = store.put_voiceprint(voiceprint("u2", offset=2))
    assert store.delete_voiceprint("t1", c.id) == c
    with pytest.raises(NotFound):
        store.delete_voiceprint("t1", c.id)
    with pytest.raises(NotFound):
        store.get_voiceprint("t1", c.id)
    assert store.find_voiceprint("t1", "u2", "enc-1") is None
    # Enrolling again after a delete makes a new print.
    again = store.put_voiceprint(voiceprint("u2", offset=3))
    assert again.id != c.id
    assert store.delete_participant_voiceprints("t1", "u1") == 2
    assert store.delete_participant_voiceprints("t1", "u1") == 0
    for gone in (a, b):
        with pytest.raises(NotFound):
            store.get_voiceprint("t1", gone.id)
    assert [v.id for v in store.list_voiceprints("t1", limit=10, cursor=None).items] == [again.id]
    assert store.voiceprints_of_model("t1", "enc-2") == []


def test_voiceprints_never_cross_tenants(store: Store) -> None:
    mine = store.put_voiceprint(voiceprint("u1", "t1"))
    theirs = store.put_voiceprint(voiceprint("u1", "t2", offset=1))
    assert theirs.id != mine.id  # the same participant id in two tenants: two prints
    for call in (
        lambda: store.get_voiceprint("t2", mine.id),
        lambda: store.delete_voiceprint("t2", mine.id),
    ):
        with pytest.raises(NotFound):
            call()
    assert [v.id for v in store.list_voiceprints("t2", limit=10, cursor=None).items] == [theirs.id]
    assert [v.id for v in store.voiceprints_of_model("t2", "enc-1")] == [theirs.id]
    assert store.find_voiceprint("t2", "u1", "enc-1") == theirs
    assert store.delete_participant_voiceprints("t2", "u1") == 1
    assert store.get_voiceprint("t1", mine.id) == mine
    # A tenant whose name holds the key separator cannot reach another's keys.
    assert store.list_voiceprints("t1:x", limit=10, cursor=None).items == []
