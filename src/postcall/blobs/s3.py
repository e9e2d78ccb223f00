"""S3-compatible blobs (AWS S3, MinIO, R2, moto): ``s3://bucket/prefix``.

Credentials and endpoint come from the standard variables that boto3 reads itself
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL`` for MinIO);
the region from ``AWS_REGION`` (default ``us-east-1``). Requests are signed with
SigV4 and addressed path-style, which every S3-compatible server understands.

Uploads are streamed: the source is read one part at a time in the caller's thread
(so a reader bound to that thread, or one that raises ``PayloadTooLarge``, behaves as
it would on the local backend) and parts are sent by a few worker threads. Memory
stays at ``part_size * (max_concurrency + 1)`` whatever the size of the stream, and a
failed upload is aborted, so no object (and no dangling multipart upload) is left.

Outages: a server that cannot be reached, drops the connection, times out or answers
5xx (after boto3's own retries) surfaces as ``BlobsUnavailable`` (``_outage``).
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO
from urllib.parse import unquote, urlsplit

import boto3  # type: ignore[import-untyped]
from boto3.exceptions import Boto3Error  # type: ignore[import-untyped]
from boto3.s3.transfer import TransferConfig  # type: ignore[import-untyped]
from botocore.config import Config  # type: ignore[import-untyped]
from botocore.exceptions import (  # type: ignore[import-untyped]
    ClientError,
    HTTPClientError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from postcall.blobs.base import MAX_OBJECT_KEY_BYTES, check_object_key, is_generated
from postcall.errors import BlobsUnavailable, InvalidInput, NotFound

log = logging.getLogger(__name__)

#: Size of one multipart part (S3 wants at least 5 MiB for all but the last part).
DEFAULT_PART_SIZE = 8 * 1024 * 1024
MIN_PART_SIZE = 5 * 1024 * 1024
#: Parts in flight at once; memory is bounded by part_size * (this + 1).
DEFAULT_CONCURRENCY = 4
#: SigV4 pre-signed URLs live at most seven days.
MAX_PRESIGN_S = 7 * 24 * 3600
_MISSING_CODES = frozenset({"404", "NoSuchKey", "NotFound"})
_SUFFIX = re.compile(r"^\.[A-Za-z0-9]{1,8}$")


def make_client(endpoint_url: str | None = None) -> Any:
    """An S3 client signed with SigV4, path-style; credentials from the environment."""
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    config = Config(
        signature_version="s3v4",
        s3={"addressing_style": "path"},
        # Three tries (about 1.5 s of backoff at most): a dead server answers 503 soon;
        # the workers ride out longer outages themselves (postcall.outages).
        retries={"mode": "standard", "max_attempts": 3},
        connect_timeout=5,
    )
    # A session of our own: boto3's default session is not safe to share across threads.
    return boto3.session.Session().client(
        "s3", region_name=region, endpoint_url=endpoint_url, config=config
    )


@contextmanager
def _outage() -> Iterator[None]:
    """Turn "the server does not answer" into ``BlobsUnavailable``; other errors pass."""
    try:
        yield
    except (BotoConnectionError, HTTPClientError) as exc:
        raise BlobsUnavailable(f"the blob store (S3) does not answer: {exc}") from exc
    except ClientError as exc:
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if status >= 500:
            raise BlobsUnavailable(f"the blob store (S3) answers {status}: {exc}") from exc
        raise
    except Boto3Error as exc:  # a transfer that gave up (its cause is one of the above)
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, BotoConnectionError | HTTPClientError):
            raise BlobsUnavailable(f"the blob store (S3) does not answer: {exc}") from exc
        raise


def _is_missing(error: ClientError) -> bool:
    return str(error.response.get("Error", {}).get("Code", "")) in _MISSING_CODES


def _read_part(source: BinaryIO, size: int) -> bytes:
    """Read up to ``size`` bytes, looping over short reads; shorter only at end of stream."""
    first = source.read(size)
    if not first or len(first) == size:
        return bytes(first or b"")
    chunks = [first]
    got = len(first)
    while got < size:
        more = source.read(size - got)
        if not more:
            break
        chunks.append(more)
        got += len(more)
    return b"".join(chunks)


class S3BlobStore:
    """Objects in one bucket, under an optional key prefix (``s3://bucket/prefix``).

    Keys given to the store are relative to the prefix. ``client`` lets a caller pass
    a ready boto3 S3 client (tests, custom credentials); otherwise one is built from
    the environment, with ``endpoint_url`` overriding ``AWS_ENDPOINT_URL``.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        client: Any = None,
        endpoint_url: str | None = None,
        part_size: int = DEFAULT_PART_SIZE,
        max_concurrency: int = DEFAULT_CONCURRENCY,
    ) -> None:
        if not bucket or "/" in bucket:
            raise ValueError(f"invalid bucket name {bucket!r}")
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {MIN_PART_SIZE} bytes")
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        prefix = prefix.strip("/")
        if prefix:
            check_object_key(prefix)
            prefix += "/"
        self.bucket = bucket
        self.prefix = prefix
        self.part_size = part_size
        self.max_concurrency = max_concurrency
        self.client: Any = client if client is not None else make_client(endpoint_url)
        self._transfer = TransferConfig(
            multipart_chunksize=part_size, max_concurrency=max_concurrency
        )

    @classmethod
    def from_url(cls, url: str, *, client: Any = None) -> S3BlobStore:
        """A store for ``s3://bucket`` or ``s3://bucket/prefix``."""
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise ValueError(f"not an s3://bucket/prefix URL: {url!r}")
        if parts.query or parts.fragment:
            raise ValueError(f"an s3:// blob URL takes no query or fragment: {url!r}")
        return cls(parts.netloc, unquote(parts.path), client=client)

    def __repr__(self) -> str:
        return f"S3BlobStore(bucket={self.bucket!r}, prefix={self.prefix!r})"

    def _full(self, key: str) -> str:
        check_object_key(key)
        full = self.prefix + key
        if len(full.encode("utf-8")) > MAX_OBJECT_KEY_BYTES:
            raise InvalidInput(
                f"object_key is longer than {MAX_OBJECT_KEY_BYTES} bytes with the prefix",
                field="object_key",
            )
        return full

    # -- writing -----------------------------------------------------------------

    def put(self, key: str, source: BinaryIO) -> int:
        full = self._full(key)
        body = _read_part(source, self.part_size)
        with _outage():
            if len(body) < self.part_size:
                # The whole stream fits in one part: a single PUT, no multipart overhead.
                self.client.put_object(Bucket=self.bucket, Key=full, Body=body)
                return len(body)
            return self._put_multipart(full, body, source)

    def _put_multipart(self, full: str, first: bytes, source: BinaryIO) -> int:
        upload_id = str(
            self.client.create_multipart_upload(Bucket=self.bucket, Key=full)["UploadId"]
        )
        parts: list[dict[str, Any]] = []
        written = 0
        pool = ThreadPoolExecutor(self.max_concurrency, thread_name_prefix="s3-put")
        try:
            in_flight: dict[Future[str], int] = {}
            number = 1
            body = first
            while body:
                written += len(body)
                if len(in_flight) >= self.max_concurrency:
                    done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                    for future in done:
                        parts.append({"PartNumber": in_flight.pop(future), "ETag": future.result()})
                in_flight[pool.submit(self._upload_part, full, upload_id, number, body)] = number
                number += 1
                del body  # let the part go as soon as it is sent
                body = _read_part(source, self.part_size)
            for future, part_number in in_flight.items():
                parts.append({"PartNumber": part_number, "ETag": future.result()})
            parts.sort(key=lambda p: int(p["PartNumber"]))
            self.client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=full,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        except BaseException:
            # No part may land after the abort: drop queued parts, wait for running ones.
            pool.shutdown(wait=True, cancel_futures=True)
            self._abort(full, upload_id)
            raise
        finally:
            pool.shutdown(wait=True)
        return written

    def _upload_part(self, full: str, upload_id: str, number: int, body: bytes) -> str:
        response = self.client.upload_part(
            Bucket=self.bucket, Key=full, UploadId=upload_id, PartNumber=number, Body=body
        )
        return str(response["ETag"])

    def _abort(self, full: str, upload_id: str) -> None:
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=full, UploadId=upload_id)
        except Exception:
            # The original error matters more; a bucket lifecycle rule can clean up.
            log.warning("could not abort multipart upload of %s", full, exc_info=True)

    def put_bytes(self, key: str, data: bytes) -> None:
        full = self._full(key)
        with _outage():
            self.client.put_object(Bucket=self.bucket, Key=full, Body=data)

    def delete(self, key: str) -> None:
        full = self._full(key)
        with _outage():
            # S3 answers 204 whether or not the object was there.
            self.client.delete_object(Bucket=self.bucket, Key=full)

    # -- reading -----------------------------------------------------------------

    def get_bytes(self, key: str) -> bytes:
        full = self._full(key)
        with _outage():
            try:
                response = self.client.get_object(Bucket=self.bucket, Key=full)
            except ClientError as error:
                if _is_missing(error):
                    raise NotFound(f"object {key!r} not found") from None
                raise
            with response["Body"] as body:
                return bytes(body.read())

    @contextmanager
    def local_file(self, key: str) -> Iterator[Path]:
        full = self._full(key)
        suffix = PurePosixPath(key).suffix
        name = "blob" + (suffix if _SUFFIX.match(suffix) else "")
        with tempfile.TemporaryDirectory(prefix="postcall-blob-") as tmp:
            path = Path(tmp) / name
            with _outage():
                try:
                    with path.open("wb") as out:
                        self.client.download_fileobj(self.bucket, full, out, Config=self._transfer)
                except ClientError as error:
                    if _is_missing(error):
                        raise NotFound(f"object {key!r} not found") from None
                    raise
            yield path

    def exists(self, key: str) -> bool:
        full = self._full(key)
        with _outage():
            try:
                self.client.head_object(Bucket=self.bucket, Key=full)
            except ClientError as error:
                if _is_missing(error):
                    return False
                raise
        return True

    def presign_get(self, key: str, expires_s: int) -> str | None:
        if not 1 <= expires_s <= MAX_PRESIGN_S:
            raise ValueError(f"expires_s must be between 1 and {MAX_PRESIGN_S}")
        url = self.client.generate_presigned_url(
            "get_object",
            Params={"Bucket": self.bucket, "Key": self._full(key)},
            ExpiresIn=expires_s,
        )
        return str(url)

    def resolve_external(self, object_key: str) -> str:
        check_object_key(object_key)
        if is_generated(object_key):
            # postcall owns such objects (and deletes them with their recording).
            raise InvalidInput(
                f"object_key {object_key!r} names an object postcall manages itself",
                field="object_key",
            )
        if not self.exists(object_key):
            raise NotFound(f"no object at {object_key!r}")
        return object_key
