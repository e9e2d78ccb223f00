"""schemathesis against postcall's own OpenAPI document, in-process (ASGI).

Every documented operation gets generated requests (valid and invalid); no answer may
be a 5xx, carry an undocumented status, or break its documented schema. Bounded:
a few examples per operation, so the whole run takes seconds.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from postcall import wiring
from postcall.api.app import create_app
from postcall.settings import Settings
from tests import media
from tests.unit.test_api import tone

KEY = "fuzz-key"
EXAMPLES = 10
"""Generated requests per operation and mode (valid, invalid): about 300 in all."""
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def fuzz(operation: Any, mode: GenerationMode, tried: dict[str, int]) -> None:
    """Send ``EXAMPLES`` generated requests to one operation and check every answer."""
    label = f"{operation.label} ({mode.value})"

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: Any) -> None:
        tried[label] = tried.get(label, 0) + 1
        case.call_and_validate(headers={"Authorization": f"Bearer {KEY}"}, checks=CHECKS)

    check()


def test_api_conforms_to_its_openapi_document(tmp_path: Path) -> None:
    settings_ = Settings(data_dir=tmp_path / "data", api_keys=KEY, max_upload_bytes=4 * 1024**2)
    comps = wiring.build(settings_, with_worker=False)
    # One real recording, so that some generated requests reach more than 404s.
    wav = media.write_audio(tmp_path / "seed.wav", tone(1)).read_bytes()
    comps.service.create_recording(
        "default", io.BytesIO(wav), filename="seed.wav", content_type="audio/wav", recording_id="a"
    )
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(comps))
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 12
    tried: dict[str, int] = {}

    for operation in operations:
        fuzz(operation, GenerationMode.POSITIVE, tried)
        # Invalid requests exist only where there is a query or a body to get wrong
        # (a path segment is any string).
        if len(operation.query) or len(operation.body):
            fuzz(operation, GenerationMode.NEGATIVE, tried)
    comps.store.close()
    assert all(tried.values()) and len(tried) > len(operations)


def test_error_answers_are_documented(tmp_path: Path) -> None:
    """Every operation declares the error shape it can answer with."""
    comps = wiring.build(Settings(data_dir=tmp_path, api_keys=KEY), with_worker=False)
    document = create_app(comps).openapi()
    for path, item in document["paths"].items():
        for method, operation in item.items():
            responses = operation["responses"]
            assert {"401", "404", "422"} <= set(responses), (method, path)
            ref = responses["404"]["content"]["application/json"]["schema"]["$ref"]
            assert ref.endswith("/ErrorResponse"), (method, path)
    comps.store.close()
