"""The compose file: it parses, has the documented profiles, and sets only what postcall reads."""

from __future__ import annotations

from typing import Any

import yaml
from typer.main import get_command

from postcall.cli import app
from postcall.settings import Settings
from tests.conftest import ROOT

# Read by boto3 (the S3 backend) straight from the environment.
AWS_VARIABLES = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "AWS_ENDPOINT_URL"}


def variables_postcall_reads() -> set[str]:
    names = set()
    for name, field in Settings.model_fields.items():
        names.add(f"POSTCALL_{name.upper()}")
        alias = field.validation_alias
        choices = getattr(alias, "choices", [])
        names.update(str(c) for c in choices if str(c).isupper())
    return names | AWS_VARIABLES


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def postcall_services(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in data["services"].items() if s.get("image") == "postcall:latest"}


def test_profiles_match_the_documented_stack() -> None:
    services = compose()["services"]
    default = {n for n, s in services.items() if not s.get("profiles")}
    stt_post = {n for n, s in services.items() if "stt-post" in s.get("profiles", [])}
    assert {"api", "redis", "minio"} <= default
    assert stt_post == {"stt-worker", "whisper"}
    redis_cmd = services["redis"]["command"]
    assert redis_cmd[redis_cmd.index("--appendonly") + 1] == "yes"


def test_every_variable_set_is_one_postcall_reads() -> None:
    known = variables_postcall_reads()
    services = postcall_services(compose())
    assert set(services) == {"api", "stt-worker", "whisper"}
    for name, service in services.items():
        unknown = set(service.get("environment", {})) - known
        assert not unknown, f"{name} sets variables postcall never reads: {unknown}"


def test_every_command_is_a_postcall_command() -> None:
    commands = set(get_command(app).commands)  # type: ignore[attr-defined]
    for name, service in postcall_services(compose()).items():
        assert service["command"][0] in commands, name


def test_the_workers_reach_the_whisper_service_and_the_shared_backends() -> None:
    services = compose()["services"]
    worker = services["stt-worker"]["environment"]
    api = services["api"]["environment"]
    assert worker["WHISPER_URL"].startswith("http://whisper:")
    assert "--no-worker" in services["api"]["command"]
    for key in ("POSTCALL_STORE_URL", "POSTCALL_BLOB_URL", "AWS_ENDPOINT_URL"):
        assert worker[key] == api[key]
    assert api["POSTCALL_STORE_URL"].startswith("redis://redis:")
    assert api["POSTCALL_BLOB_URL"].startswith("s3://")
