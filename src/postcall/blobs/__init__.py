"""Media and transcript documents behind one port (``BlobStore``)."""

from postcall.blobs.base import BlobStore, new_key

__all__ = ["BlobStore", "new_key"]
