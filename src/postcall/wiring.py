"""Builds the components from settings: the only place that names concrete backends."""

from __future__ import annotations

from dataclasses import dataclass

from postcall.blobs.base import BlobStore
from postcall.engines.base import Engine
from postcall.service import Limits, Service
from postcall.settings import Settings
from postcall.store.base import Store
from postcall.worker import Worker, WorkerConfig


def build_store(settings: Settings) -> Store:
    url = settings.resolved_store_url
    if url.startswith("sqlite:///"):
        from postcall.store.sqlite import SqliteStore

        return SqliteStore.from_url(url)
    raise ValueError(f"POSTCALL_STORE_URL={url!r}: supported schemes are sqlite:///")


def build_blobs(settings: Settings) -> BlobStore:
    url = settings.resolved_blob_url
    if url.startswith("file://"):
        from postcall.blobs.local import LocalBlobStore

        return LocalBlobStore.from_url(url)
    raise ValueError(f"POSTCALL_BLOB_URL={url!r}: supported schemes are file://")


def build_engine(settings: Settings) -> Engine:
    """The in-process engine; imported here so the API process never loads it."""
    from postcall.engines.whisper_local import FasterWhisperEngine

    return FasterWhisperEngine(
        settings.whisper_model,
        device=settings.whisper_device,
        compute_type=settings.whisper_compute_type,
        cpu_threads=settings.whisper_cpu_threads,
    )


def worker_config(settings: Settings) -> WorkerConfig:
    return WorkerConfig(
        lease_s=settings.lease_s,
        max_attempts=settings.max_attempts,
        poll_s=settings.worker_poll_s,
        chunk_max_s=settings.chunk_max_s,
        beam_size=settings.whisper_beam_size,
        max_duration_s=settings.max_duration_s,
    )


@dataclass
class Components:
    settings: Settings
    store: Store
    blobs: BlobStore
    service: Service
    worker: Worker | None = None


def build(settings: Settings, *, with_worker: bool, engine: Engine | None = None) -> Components:
    """Everything a process needs; ``with_worker`` adds an in-process worker."""
    store = build_store(settings)
    blobs = build_blobs(settings)
    worker = None
    if with_worker:
        worker = Worker(store, blobs, engine or build_engine(settings), worker_config(settings))
    service = Service(
        store,
        blobs,
        limits=Limits(
            max_upload_bytes=settings.max_upload_bytes, max_duration_s=settings.max_duration_s
        ),
        default_language=settings.default_language,
        on_enqueue=worker.notify if worker is not None else None,
    )
    return Components(settings, store, blobs, service, worker)
