"""Secrets kept sealed in the store: webhook signing secrets, encrypted with a key derived
from ``POSTCALL_SECRET_KEY``.

AES-256-GCM (the ``cryptography`` package) with a fresh 96-bit nonce per seal; the key
is HKDF-SHA256 of ``POSTCALL_SECRET_KEY`` for this one purpose, so it is not the key
that signs download links. The sealed text names its scheme (``sealed:v1:…``) and is
bound to what it belongs to (``context``, e.g. the endpoint): a sealed secret copied
onto another endpoint does not open. A value without the prefix is a secret stored in
the clear before sealing was turned on; it is read as it is (and sealed when next
saved).
"""

from __future__ import annotations

import base64
import os

from postcall.errors import PostcallError

PREFIX = "sealed:v1:"
_INFO = b"postcall webhook secrets v1"


class SealError(PostcallError):
    """A sealed secret that cannot be opened (no key, or another key)."""

    code = "secret_sealed"


def is_sealed(stored: str) -> bool:
    return stored.startswith(PREFIX)


class SecretBox:
    """Seals and opens secrets with a key derived from ``secret_key``."""

    def __init__(self, secret_key: str) -> None:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF

        if not secret_key:
            raise ValueError("an empty POSTCALL_SECRET_KEY cannot seal anything")
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(
            secret_key.encode()
        )
        self._aead = AESGCM(key)

    def seal(self, secret: str, context: str) -> str:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, secret.encode(), context.encode())
        return PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode()

    def open(self, stored: str, context: str) -> str:
        if not is_sealed(stored):
            return stored  # kept in the clear before sealing was turned on
        from cryptography.exceptions import InvalidTag

        raw = base64.urlsafe_b64decode(stored.removeprefix(PREFIX))
        try:
            return self._aead.decrypt(raw[:12], raw[12:], context.encode()).decode()
        except InvalidTag:
            raise SealError(
                "a stored webhook secret does not open with this POSTCALL_SECRET_KEY "
                "(it was sealed with another key)"
            ) from None


def seal(box: SecretBox | None, secret: str, context: str) -> str:
    """``secret`` sealed when there is a box, else as it is."""
    return secret if box is None or not secret else box.seal(secret, context)


def unseal(box: SecretBox | None, stored: str, context: str) -> str:
    """The secret ``stored`` holds, sealed or not."""
    if box is not None:
        return box.open(stored, context)
    if is_sealed(stored):
        raise SealError(
            "webhook secrets are stored sealed but POSTCALL_SECRET_KEY is not set: set the "
            "key they were sealed with"
        )
    return stored
