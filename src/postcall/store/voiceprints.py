"""The voiceprint part of the store port: known voices, per tenant and participant.

A tenant holds at most one voiceprint per (participant id, encoder model): saving one
for a participant that already has one of that model replaces it in place (it keeps
its id and creation time). Nothing here crosses tenants: every method takes the
tenant, and another tenant's id is ``NotFound`` as an id that does not exist.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from postcall.domain import Voiceprint

if TYPE_CHECKING:
    from postcall.store.base import Page


class VoiceprintStore(Protocol):
    """Voiceprints (embeddings, never audio)."""

    def put_voiceprint(self, voiceprint: Voiceprint) -> Voiceprint:
        """Save a voiceprint; the tenant's existing one for the same participant and
        model is replaced, keeping its id and ``created_at``. Returns what is stored."""
        ...

    def get_voiceprint(self, tenant: str, voiceprint_id: str) -> Voiceprint:
        """The voiceprint, or ``NotFound``."""
        ...

    def find_voiceprint(self, tenant: str, participant_id: str, model: str) -> Voiceprint | None:
        """The participant's voiceprint of ``model``, or None."""
        ...

    def list_voiceprints(
        self, tenant: str, *, limit: int, cursor: str | None, participant_id: str | None = None
    ) -> Page[Voiceprint]:
        """Newest first; with ``participant_id`` only that participant's (one page)."""
        ...

    def voiceprints_of_model(self, tenant: str, model: str) -> list[Voiceprint]:
        """Every voiceprint of the tenant made with ``model`` (for matching)."""
        ...

    def delete_voiceprint(self, tenant: str, voiceprint_id: str) -> Voiceprint:
        """Delete one voiceprint and return it; ``NotFound``."""
        ...

    def delete_participant_voiceprints(self, tenant: str, participant_id: str) -> int:
        """Delete every voiceprint of the participant (all models); how many there were."""
        ...


def embedding_to_json(embedding: tuple[float, ...]) -> str:
    """An embedding as a JSON list, to 7 significant digits (float32 precision)."""
    return json.dumps([float(f"{x:.7g}") for x in embedding])


def voiceprint_fields(v: Voiceprint) -> dict[str, str]:
    """A voiceprint as a flat record of strings (a Redis hash; SQLite binds the same)."""
    return {
        "id": v.id,
        "tenant": v.tenant,
        "participant_id": v.participant_id,
        "name": v.name,
        "model": v.model,
        "embedding": embedding_to_json(v.embedding),
        "seconds": repr(float(v.seconds)),
        "source": v.source,
        "created_at": repr(v.created_at.timestamp()),
        "updated_at": repr(v.updated_at.timestamp()),
    }


def voiceprint_from_row(row: Mapping[str, Any]) -> Voiceprint:
    """Build a Voiceprint from a backend's flat record (SQL row or Redis hash)."""
    return Voiceprint(
        id=str(row["id"]),
        tenant=str(row["tenant"]),
        participant_id=str(row["participant_id"]),
        name=str(row["name"]),
        embedding=tuple(float(x) for x in json.loads(str(row["embedding"]))),
        model=str(row["model"]),
        seconds=float(row["seconds"]),
        source=str(row["source"]),
        created_at=datetime.fromtimestamp(float(row["created_at"]), UTC),
        updated_at=datetime.fromtimestamp(float(row["updated_at"]), UTC),
    )
