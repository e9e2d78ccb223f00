"""Records and the job queue behind one port (``Store``), with several backends."""

from postcall.store.base import Page, Store

__all__ = ["Page", "Store"]
