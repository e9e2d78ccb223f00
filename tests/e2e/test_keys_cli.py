"""``postcall keys``: list and revoke, as real processes over SQLite and Redis.

Two API processes share one store; a key revoked with the CLI is refused by both on
their next request (keys are looked up per request, never cached)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from postcall.api.deps import hash_key
from tests.contract.redis_server import redis_server  # noqa: F401 (fixture)
from tests.e2e.server import Server
from tests.helpers import wait_for

pytestmark = pytest.mark.e2e

ENV_KEY = "env-configured-key-1"


@pytest.fixture(params=["sqlite", "redis"])
def env(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    settings = {
        "POSTCALL_DATA_DIR": str(tmp_path / "data"),
        "POSTCALL_API_KEYS": ENV_KEY,
        "POSTCALL_AUTH": "required",
    }
    if request.param == "redis":
        server = request.getfixturevalue("redis_server")
        settings["POSTCALL_STORE_URL"] = server.fresh_url()
    return settings


@pytest.fixture
def apis(env: dict[str, str], tmp_path: Path) -> Iterator[list[Server]]:
    servers = [Server(env, tmp_path / f"api{i}.log", "--no-worker") for i in range(2)]
    yield servers
    for server in servers:
        server.stop()


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "postcall.cli", "keys", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def listed(env: dict[str, str]) -> list[dict[str, Any]]:
    out = cli(env, "list", "--json")
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()]


def status(server: Server, key: str) -> int:
    return httpx.get(
        f"{server.url}/v1/recordings", headers={"Authorization": f"Bearer {key}"}, timeout=10
    ).status_code


def test_keys_are_listed_without_secrets_and_revoked_on_every_api(
    env: dict[str, str], apis: list[Server]
) -> None:
    made = cli(env, "create", "--name", "ci", "--tenant", "acme")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert key.startswith("pc_")
    before = {row["name"]: row for row in listed(env)}
    assert before["ci"]["last_used_at"] is None

    assert [status(api, key) for api in apis] == [200, 200]
    rows = listed(env)
    by_name = {row["name"]: row for row in rows}
    assert set(by_name) == {"ci", "env #1"}
    ci, from_env = by_name["ci"], by_name["env #1"]
    assert (ci["tenant"], ci["source"]) == ("acme", "store")
    assert ci["id"] == f"key_{hash_key(key)[:12]}" and ci["created_at"]
    assert ci["last_used_at"] is not None  # recorded by the request just made
    assert (from_env["source"], from_env["tenant"], from_env["created_at"]) == (
        "env",
        "default",
        None,
    )
    table = cli(env, "list")
    assert table.returncode == 0 and "acme" in table.stdout and "env" in table.stdout
    for text in (table.stdout, json.dumps(rows)):
        assert key not in text and ENV_KEY not in text and hash_key(key) not in text

    env_revoke = cli(env, "revoke", from_env["id"])
    assert env_revoke.returncode == 2 and "POSTCALL_API_KEYS" in env_revoke.stderr
    revoked = cli(env, "revoke", "ci")
    assert revoked.returncode == 0, revoked.stderr
    assert ci["id"] in revoked.stderr

    wait_for(
        lambda: all(status(api, key) == 401 for api in apis),
        timeout=5,
        what="every API process to refuse the revoked key",
    )
    assert [status(api, ENV_KEY) for api in apis] == [200, 200]
    assert [row["name"] for row in listed(env)] == ["env #1"]
    again = cli(env, "revoke", "ci")
    assert again.returncode == 2 and "no stored key" in again.stderr


def test_a_name_shared_by_two_keys_is_revoked_by_id(env: dict[str, str]) -> None:
    first = cli(env, "create", "--name", "bot").stdout.strip()
    second = cli(env, "create", "--name", "bot").stdout.strip()
    ambiguous = cli(env, "revoke", "bot")
    assert ambiguous.returncode == 2 and "revoke one by its id" in ambiguous.stderr
    assert [row["name"] for row in listed(env)].count("bot") == 2
    first_id = f"key_{hash_key(first)[:12]}"
    assert cli(env, "revoke", first_id).returncode == 0
    left = [row["id"] for row in listed(env) if row["name"] == "bot"]
    assert left == [f"key_{hash_key(second)[:12]}"]
