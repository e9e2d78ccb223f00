"""A real S3 protocol server for tests: moto's standalone server, in-process.

The server listens on a free port of 127.0.0.1; nothing is put into the process
environment, so endpoint and credentials are always passed to boto3 explicitly.

moto (5.x) accepts any pre-signed URL: it checks neither the signature nor the
expiry of query-string-authenticated requests. Real S3 and MinIO do, and our
``download_url`` relies on it, so the server is fronted by ``PresignChecker``: an
independent implementation of SigV4 query-string verification (from the AWS spec,
not botocore's signer) that refuses a bad or expired pre-signed request with 403,
as S3 does. Requests signed in the ``Authorization`` header pass through untouched.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, quote

import boto3  # type: ignore[import-untyped]
import pytest
from botocore.config import Config  # type: ignore[import-untyped]
from moto.server import ThreadedMotoServer

REGION = "us-east-1"
ACCESS_KEY = "AKIAPOSTCALLTEST0001"
SECRET_KEY = "postcall-test-secret-key-0001"

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()


def _uri_encode(value: str, *, keep_slash: bool) -> str:
    # SigV4 encoding: everything but unreserved characters (and '/' in paths).
    return quote(value, safe="-_.~/" if keep_slash else "-_.~")


class PresignChecker:
    """WSGI middleware that verifies SigV4 pre-signed (query-string) requests."""

    def __init__(self, app: WsgiApp, secrets: dict[str, str]) -> None:
        self.app = app
        self.secrets = secrets
        self.clock_offset_s = 0.0  # tests move the checker's clock to expire URLs

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        query = parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        params = dict(query)
        if "X-Amz-Signature" in params:
            refusal = self._refusal(environ, query, params)
            if refusal is not None:
                code, message = refusal
                body = (
                    '<?xml version="1.0" encoding="UTF-8"?>\n'
                    f"<Error><Code>{code}</Code><Message>{message}</Message></Error>"
                ).encode()
                start_response(
                    "403 Forbidden",
                    [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))],
                )
                return [body]
        return self.app(environ, start_response)

    def _refusal(
        self, environ: dict[str, Any], query: list[tuple[str, str]], params: dict[str, str]
    ) -> tuple[str, str] | None:
        try:
            algorithm = params["X-Amz-Algorithm"]
            access_key, date, region, service, terminator = params["X-Amz-Credential"].split("/")
            amz_date = params["X-Amz-Date"]
            expires = int(params["X-Amz-Expires"])
            signed_headers = params["X-Amz-SignedHeaders"].split(";")
            signed_at = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        except (KeyError, ValueError):
            return "AuthorizationQueryParametersError", "malformed pre-signed URL"
        if algorithm != "AWS4-HMAC-SHA256" or terminator != "aws4_request" or service != "s3":
            return "AuthorizationQueryParametersError", "unsupported signing scope"
        if access_key not in self.secrets:
            return "InvalidAccessKeyId", "unknown access key"
        if not 1 <= expires <= 7 * 24 * 3600 or date != amz_date[:8]:
            return "AuthorizationQueryParametersError", "bad expiry or date"
        now = time.time() + self.clock_offset_s
        if now > signed_at.timestamp() + expires:
            return "AccessDenied", "Request has expired"

        # PATH_INFO is the percent-decoded path carried as latin-1 (PEP 3333).
        path = environ.get("PATH_INFO", "/").encode("latin-1").decode("utf-8")
        canonical_query = "&".join(
            f"{_uri_encode(k, keep_slash=False)}={_uri_encode(v, keep_slash=False)}"
            for k, v in sorted(query)
            if k != "X-Amz-Signature"
        )
        headers = []
        for name in signed_headers:
            env_name = "HTTP_" + name.upper().replace("-", "_")
            value = environ.get("CONTENT_TYPE" if name == "content-type" else env_name)
            if value is None:
                return "SignatureDoesNotMatch", f"signed header {name} missing"
            headers.append(f"{name}:{' '.join(value.split())}\n")
        canonical_request = "\n".join(
            [
                environ["REQUEST_METHOD"],
                _uri_encode(path, keep_slash=True),
                canonical_query,
                "".join(headers),
                ";".join(signed_headers),
                "UNSIGNED-PAYLOAD",
            ]
        )
        scope = f"{date}/{region}/{service}/aws4_request"
        string_to_sign = "\n".join(
            [
                algorithm,
                amz_date,
                scope,
                hashlib.sha256(canonical_request.encode("utf-8")).hexdigest(),
            ]
        )
        signing_key = _hmac(("AWS4" + self.secrets[access_key]).encode("utf-8"), date)
        for part in (region, service, "aws4_request"):
            signing_key = _hmac(signing_key, part)
        expected = hmac.new(signing_key, string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, params["X-Amz-Signature"]):
            return "SignatureDoesNotMatch", "signature does not match"
        return None


@dataclass
class S3Server:
    """A running moto S3 server with one bucket, and how to reach it."""

    endpoint_url: str
    bucket: str
    checker: PresignChecker
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY
    region: str = REGION
    _client: Any = field(default=None, repr=False)

    def client(self) -> Any:
        """A boto3 S3 client for this server (SigV4, path-style, explicit credentials).

        One client, made once: building a client costs ~0.5 s, and clients are
        thread-safe.
        """
        if self._client is None:
            self._client = self._make_client()
        return self._client

    def _make_client(self) -> Any:
        session = boto3.session.Session(
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
        )
        return session.client(
            "s3",
            endpoint_url=self.endpoint_url,
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
        )

    @contextmanager
    def clock_moved(self, seconds: float) -> Iterator[None]:
        """Within the block, the pre-signed URL checker lives ``seconds`` in the future."""
        self.checker.clock_offset_s += seconds
        try:
            yield
        finally:
            self.checker.clock_offset_s -= seconds


@contextmanager
def running_s3_server(bucket: str = "postcall-test") -> Iterator[S3Server]:
    """Start moto's S3 server on a free port, create ``bucket``, stop it afterwards."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        # Front moto's WSGI app with the pre-signed URL checker (see module docstring).
        wsgi_server = server._server
        assert wsgi_server is not None
        checker = PresignChecker(wsgi_server.app, {ACCESS_KEY: SECRET_KEY})
        wsgi_server.app = checker
        host, port = server.get_host_and_port()
        s3 = S3Server(endpoint_url=f"http://{host}:{port}", bucket=bucket, checker=checker)
        s3.client().create_bucket(Bucket=bucket)
        yield s3
    finally:
        server.stop()


@pytest.fixture(scope="session", name="s3_server")
def s3_server_fixture() -> Iterator[S3Server]:
    """One moto S3 server (bucket ``postcall-test``) for the whole session."""
    with running_s3_server() as s3:
        yield s3
