"""Voiceprints: list, read, delete (one, or a participant's) and enrol from a sample.

Everything is the caller's tenant's only: another tenant's id answers 404 exactly as
one that does not exist. Embeddings are left out of answers unless
``include_embedding=true`` is asked for.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from postcall.api.deps import Svc, Tenant
from postcall.api.middleware import v1_routers
from postcall.api.schemas import error_responses, iso
from postcall.api.uploads import in_thread, receive_upload
from postcall.domain import Voiceprint
from postcall.errors import InvalidInput
from postcall.service import Service, diarization_available
from postcall.voiceprint_work import check_participant, enrol_sample

router, _ = v1_routers()

Limit = Annotated[int, Query(ge=1, le=500, description="Items per page.")]
Cursor = Annotated[str | None, Query(description="nextCursor of the previous page.")]
WithEmbedding = Annotated[
    bool,
    Query(description="Include the embedding vector (256 floats with the bundled encoder)."),
]

_SAMPLE_SCHEMA: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "participant_id", "name"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "A clean sample of the person's speech (at least "
                            "POSTCALL_VOICEPRINT_MIN_SPEECH_S of speech; the first 300 s "
                            "are read). Not kept.",
                        },
                        "participant_id": {"type": "string", "maxLength": 256},
                        "name": {"type": "string", "maxLength": 256},
                    },
                }
            }
        },
    }
}


def voiceprint_view(v: Voiceprint, *, embedding: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": v.id,
        "participantId": v.participant_id,
        "name": v.name,
        "model": v.model,
        "seconds": round(v.seconds, 2),
        "source": v.source,
        "createdAt": iso(v.created_at),
        "updatedAt": iso(v.updated_at),
    }
    if embedding:
        body["embedding"] = list(v.embedding)
    return body


@router.get("/voiceprints")
def list_voiceprints(
    tenant: Tenant,
    svc: Svc,
    limit: Limit = 50,
    cursor: Cursor = None,
    participant_id: Annotated[
        str | None, Query(max_length=256, description="Only this participant's voiceprints.")
    ] = None,
    include_embedding: WithEmbedding = False,
) -> Any:
    """Your voiceprints, newest first (one per participant and speaker encoder)."""
    page = svc.store.list_voiceprints(
        tenant, limit=limit, cursor=cursor, participant_id=participant_id
    )
    return {
        "data": [voiceprint_view(v, embedding=include_embedding) for v in page.items],
        "nextCursor": page.next_cursor,
    }


@router.get("/voiceprints/{voiceprint_id}")
def get_voiceprint(
    voiceprint_id: str, tenant: Tenant, svc: Svc, include_embedding: WithEmbedding = False
) -> Any:
    found = svc.store.get_voiceprint(tenant, voiceprint_id)
    return voiceprint_view(found, embedding=include_embedding)


@router.delete("/voiceprints/{voiceprint_id}", status_code=204)
def delete_voiceprint(voiceprint_id: str, tenant: Tenant, svc: Svc) -> Response:
    svc.store.delete_voiceprint(tenant, voiceprint_id)
    return Response(status_code=204)


@router.delete("/voiceprints")
def delete_participant_voiceprints(
    tenant: Tenant,
    svc: Svc,
    participant_id: Annotated[
        str, Query(min_length=1, max_length=256, description="Whose voiceprints to delete.")
    ],
) -> Any:
    """Delete every voiceprint of a participant (a person's request to be forgotten)."""
    return {"deleted": svc.store.delete_participant_voiceprints(tenant, participant_id)}


@router.post(
    "/voiceprints",
    status_code=201,
    openapi_extra=_SAMPLE_SCHEMA,
    responses=error_responses(400, 413, 415),
)
async def enrol_from_sample(request: Request, tenant: Tenant, svc: Svc) -> Response:
    """Enrol (or refine) a participant's voiceprint from an uploaded speech sample
    (multipart: ``file``, ``participant_id``, ``name``). Runs while the request waits
    (a few seconds for a short sample, in a thread of its own); the sample is deleted
    once its embedding is made. 422 ``too_little_speech`` when it holds too little."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise InvalidInput(
            "send the sample as multipart/form-data with 'file', 'participant_id' and 'name'",
            field="file",
        )
    if not (svc.speaker_model or diarization_available()):
        raise InvalidInput(
            "voiceprints need the speaker encoder: install the 'diarize' extra and "
            "'pip install --no-deps resemblyzer==0.1.4'",
            field="file",
        )
    form = await receive_upload(request, svc, max_files=1, max_fields=4)
    try:
        if not form.files:
            raise InvalidInput("the 'file' field with the sample is missing", field="file")
        pid, name = check_participant(form.fields.get("participant_id"), form.fields.get("name"))
        key = form.files[0].key

        def enrol() -> Voiceprint:
            return _enrol(svc, key, tenant, pid, name)

        loop = asyncio.get_running_loop()
        saved = await in_thread(loop, enrol, name="postcall-voiceprint")
        return JSONResponse(voiceprint_view(saved), status_code=201)
    finally:
        await run_in_threadpool(svc.discard_uploads, form.files)  # never kept


def _enrol(svc: Service, key: str, tenant: str, participant_id: str, name: str) -> Voiceprint:
    return enrol_sample(
        svc.store,
        svc.blobs,
        key,
        svc.load_embedder(),
        svc.voiceprints,
        tenant=tenant,
        participant_id=participant_id,
        name=name,
    )
