"""Local-folder blobs: the embedded default (``file:///path``)."""

from __future__ import annotations

import io
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from postcall.blobs.base import check_object_key, is_generated
from postcall.errors import InvalidInput, NotFound

_KEY = re.compile(r"^[a-z]+/[0-9a-f]{8,64}(\.[a-z0-9]{1,8})?$")
_COPY_BUFFER = 1024 * 1024


def _owned(object_key: str) -> InvalidInput:
    # A key shaped like new_key()'s names an object postcall owns (and deletes with its
    # recording); a client must not register it as its own.
    return InvalidInput(
        f"object_key {object_key!r} names an object postcall manages itself", field="object_key"
    )


class LocalBlobStore:
    """Objects as files under one root folder, written atomically (temp file + rename)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        # Containment is checked against the real root, so a root that is itself
        # reached through a symlink still works.
        self._real_root = self.root.resolve()

    @classmethod
    def from_url(cls, url: str) -> LocalBlobStore:
        if not url.startswith("file://"):
            raise ValueError(f"not a file URL: {url!r}")
        return cls(url.removeprefix("file://"))

    def _path(self, key: str) -> Path:
        # Keys from new_key() take the fast path. Any other key (one registered with
        # resolve_external) must pass the object-key rules and, symlinks resolved,
        # stay inside root; this is checked on every use, not only at registration.
        if _KEY.match(key):
            return self.root / key
        return self._contained(key)

    def _contained(self, key: str) -> Path:
        check_object_key(key)
        path = (self._real_root / key).resolve()
        if not path.is_relative_to(self._real_root) or path == self._real_root:
            raise InvalidInput(
                f"object_key {key!r} leads outside the blob folder", field="object_key"
            )
        return path

    def put(self, key: str, source: BinaryIO) -> int:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".upload-")
        written = 0
        try:
            with os.fdopen(fd, "wb") as out:
                while block := source.read(_COPY_BUFFER):
                    out.write(block)
                    written += len(block)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return written

    def put_bytes(self, key: str, data: bytes) -> None:
        self.put(key, io.BytesIO(data))

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"object {key!r} not found") from None

    @contextmanager
    def local_file(self, key: str) -> Iterator[Path]:
        path = self._path(key)
        if not path.exists():
            raise NotFound(f"object {key!r} not found")
        yield path

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def presign_get(self, key: str, expires_s: int) -> str | None:
        # A folder cannot sign URLs; the API serves local objects itself.
        return None

    def resolve_external(self, object_key: str) -> str:
        # Always the full check (even for keys shaped like new_key()'s): the file was
        # written by someone else and may be a symlink.
        path = self._contained(object_key)
        if is_generated(object_key):
            raise _owned(object_key)
        if not path.is_file():
            raise NotFound(f"no object at {object_key!r}")
        return object_key
