"""Builds the components from settings: the only place that names concrete backends."""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from dataclasses import dataclass

from postcall.blobs.base import BlobStore
from postcall.delivery import Dispatcher, DispatcherConfig
from postcall.domain import Transcription
from postcall.engines.base import Engine
from postcall.errors import ModelUnavailable
from postcall.fetch import UrlFetcher
from postcall.languages import english_only_model, language_for_model
from postcall.outbound import OutboundPolicy, parse_networks
from postcall.retention import Retention, Sweeper
from postcall.sealing import SecretBox
from postcall.service import Limits, Service
from postcall.settings import Settings
from postcall.speakers.embedding import EmbedderConfig, SpeakerEmbedder, load_embedder
from postcall.store.base import Store
from postcall.transcripts import Transcripts
from postcall.voiceprint_work import VoiceprintConfig
from postcall.webhook_service import WebhookService
from postcall.webhooks import parse_schedule
from postcall.worker import WorkerConfig, WorkerPool


def build_store(settings: Settings) -> Store:
    """The store; with POSTCALL_SECRET_KEY set, it keeps webhook secrets sealed."""
    url = settings.resolved_store_url
    store: Store
    if url.startswith("sqlite:///"):
        from postcall.store.sqlite import SqliteStore

        store = SqliteStore.from_url(url, busy_timeout_s=settings.sqlite_busy_timeout_s)
    elif url.startswith(("redis://", "rediss://", "unix://")):
        from postcall.store.redis import RedisStore

        store = RedisStore.from_url(url)
    else:
        raise ValueError(
            f"POSTCALL_STORE_URL={url!r}: supported schemes are sqlite:/// and redis://"
        )
    if settings.secret_key is not None:
        store.seal_secrets_with(SecretBox(settings.secret_key.get_secret_value()))
    return store


def build_blobs(settings: Settings) -> BlobStore:
    url = settings.resolved_blob_url
    if url.startswith("file://"):
        from postcall.blobs.local import LocalBlobStore

        return LocalBlobStore.from_url(url)
    if url.startswith("s3://"):
        from postcall.blobs.s3 import S3BlobStore

        return S3BlobStore.from_url(url)
    raise ValueError(f"POSTCALL_BLOB_URL={url!r}: supported schemes are file:// and s3://")


def build_engine(settings: Settings, *, concurrency: int = 1) -> Engine:
    """The remote engine when WHISPER_URL is set, else the in-process one."""
    if settings.whisper_url:
        from postcall.engines.whisper_http import HttpWhisperEngine

        return HttpWhisperEngine(
            settings.whisper_url,
            api=settings.whisper_api,
            timeout_s=settings.whisper_timeout_s,
            retries=settings.whisper_retries,
            concurrency=settings.whisper_concurrency,
        )
    if settings.engine_factory:
        return _load_factory(settings.engine_factory)(settings)
    return build_local_engine(settings, concurrency=concurrency)


def _load_factory(path: str) -> Callable[[Settings], Engine]:
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ValueError(f"POSTCALL_ENGINE_FACTORY={path!r}: expected 'package.module:function'")
    factory: Callable[[Settings], Engine] = getattr(importlib.import_module(module_name), attr)
    return factory


def build_local_engine(settings: Settings, *, concurrency: int = 1) -> Engine:
    """The in-process engine; imported here so the API process never loads it."""
    from postcall.engines.whisper_local import FasterWhisperEngine

    return FasterWhisperEngine(
        settings.whisper_model,
        device=settings.whisper_device,
        compute_type=settings.whisper_compute_type,
        cpu_threads=settings.whisper_cpu_threads,
        num_workers=concurrency,
        batch_size=settings.whisper_batch_size,
        idle_unload_s=settings.whisper_idle_unload_s,
        min_context_s=settings.whisper_min_context_s,
        parallel=settings.whisper_parallel,
    )


def embedder_config(settings: Settings) -> EmbedderConfig:
    return EmbedderConfig(
        model_path=settings.speaker_model,
        features=settings.speaker_features,
        window=settings.speaker_fbank_window,
        cmn=settings.speaker_cmn,
        output=settings.speaker_model_output,
        device=settings.speaker_device,
        threads=settings.speaker_threads,
    )


def build_embedder(settings: Settings) -> SpeakerEmbedder | None:
    """The configured speaker model, loaded and checked now, so that a worker with a
    model it cannot use stops at its start; None: the bundled encoder (loaded at the
    first diarized job, as its weights are an optional install)."""
    if settings.speaker_model is None:
        return None
    try:
        return load_embedder(embedder_config(settings))
    except ModelUnavailable as exc:
        raise ValueError(
            f"POSTCALL_SPEAKER_MODEL={settings.speaker_model}: {exc.message}"
        ) from None


def retention(settings: Settings) -> Retention:
    return Retention(
        days=settings.retention_days,
        webhook_days=settings.webhook_retention_days,
        delete_media_after_transcription=settings.delete_media_after_transcription,
    )


def worker_config(settings: Settings) -> WorkerConfig:
    return WorkerConfig(
        lease_s=settings.lease_s,
        max_attempts=settings.max_attempts,
        poll_s=settings.worker_poll_s,
        chunk_max_s=settings.resolved_chunk_max_s,
        beam_size=settings.whisper_beam_size,
        max_duration_s=settings.max_duration_s,
        split_min_s=settings.split_min_s,
        unit_s=settings.resolved_split_unit_s,
        voiceprints=VoiceprintConfig(
            threshold=settings.voiceprint_threshold,
            min_speech_s=settings.voiceprint_min_speech_s,
        ),
    )


def dispatcher_config(settings: Settings) -> DispatcherConfig:
    return DispatcherConfig(
        schedule=parse_schedule(settings.webhook_schedule),
        timeout_s=settings.webhook_timeout_s,
        lease_s=settings.webhook_lease_s,
        poll_s=settings.webhook_poll_s,
        concurrency=settings.webhook_concurrency,
        per_endpoint=settings.webhook_endpoint_concurrency,
    )


@dataclass
class Components:
    settings: Settings
    store: Store
    blobs: BlobStore
    service: Service
    transcripts: Transcripts
    workers: WorkerPool | None = None
    webhooks: WebhookService | None = None
    dispatcher: Dispatcher | None = None
    fetcher: UrlFetcher | None = None


def build(
    settings: Settings,
    *,
    with_worker: bool,
    engine: Engine | None = None,
    concurrency: int = 1,
) -> Components:
    """Everything a process needs; ``with_worker`` adds ``concurrency`` in-process workers."""
    english_only = english_only_model(settings.whisper_model)
    try:
        language_for_model(
            settings.default_language, model=settings.whisper_model, english_only=english_only
        )
    except ValueError as exc:
        raise ValueError(f"STT_LANGUAGE={settings.stt_language}: {exc}") from None
    embedder = build_embedder(settings) if with_worker else None
    store = build_store(settings)
    blobs = build_blobs(settings)
    kept = retention(settings)
    service = Service(
        store,
        blobs,
        limits=Limits(
            max_upload_bytes=settings.max_upload_bytes,
            max_duration_s=settings.max_duration_s,
            max_metadata_bytes=settings.max_metadata_bytes,
        ),
        default_language=settings.default_language,
        max_transcripts_per_recording=settings.max_transcripts_per_recording,
        retention=kept,
        model=settings.whisper_model,
        english_only=english_only,
        speaker_model=settings.speaker_model is not None,
        voiceprints=VoiceprintConfig(
            threshold=settings.voiceprint_threshold,
            min_speech_s=settings.voiceprint_min_speech_s,
        ),
        embedder=functools.cache(functools.partial(load_embedder, embedder_config(settings))),
    )
    workers = None
    if with_worker:

        def after_job(job: Transcription) -> None:
            service.release_media_if_done(job.tenant, job.recording_id)

        workers = WorkerPool(
            store,
            blobs,
            engine or build_engine(settings, concurrency=concurrency),
            worker_config(settings),
            concurrency=concurrency,
            after_job=after_job if kept.delete_media_after_transcription else None,
            sweeper=Sweeper(service, store, kept, every_s=settings.sweep_every_s),
            embedder=embedder,
        )
        service.on_enqueue = workers.notify
    secret = settings.secret_key.get_secret_value() if settings.secret_key else None
    transcripts = Transcripts(service, ttl_s=settings.download_url_ttl_s, secret=secret)
    policy = OutboundPolicy(parse_networks(settings.allowed_networks))
    webhooks = WebhookService(store, policy, rotation_overlap_s=settings.webhook_rotation_overlap_s)
    dispatcher = None
    if settings.webhook_dispatch:
        dispatcher = Dispatcher(store, policy, dispatcher_config(settings))
    fetcher = UrlFetcher(
        policy, timeout_s=settings.url_import_timeout_s, max_bytes=settings.max_upload_bytes
    )
    return Components(
        settings, store, blobs, service, transcripts, workers, webhooks, dispatcher, fetcher
    )
