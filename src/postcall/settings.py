"""Settings, read from the environment once by the CLI and passed down explicitly.

The stack's documented variables are read verbatim (``TRANSCRIPTION_POST_ENABLED``,
``WHISPER_MODEL``, ``STT_LANGUAGE``); postcall's own are ``POSTCALL_*``. Nothing
reads a global settings object: tests build ``Settings(...)`` and hand it over.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "postcall"


class Settings(BaseSettings):
    """Everything postcall can be configured with; see the README's table."""

    model_config = SettingsConfigDict(
        env_prefix="POSTCALL_", populate_by_name=True, extra="ignore", frozen=True
    )

    # --- the stack's documented variables, verbatim ---------------------------
    transcription_post_enabled: bool = Field(
        True,
        validation_alias=AliasChoices("TRANSCRIPTION_POST_ENABLED", "transcription_post_enabled"),
        description="When false, the transcription endpoints answer 404.",
    )
    whisper_model: str = Field(
        "base",
        validation_alias=AliasChoices("WHISPER_MODEL", "whisper_model"),
        description="A Whisper size name (tiny, base, small, …) or a local CTranslate2 model dir.",
    )
    stt_language: str = Field(
        "en",
        validation_alias=AliasChoices("STT_LANGUAGE", "stt_language"),
        description="Default language code; 'auto' detects it.",
    )

    whisper_url: str | None = Field(
        None,
        validation_alias=AliasChoices("WHISPER_URL", "whisper_url"),
        description="When set, transcribe through this remote Whisper HTTP service.",
    )

    # --- postcall's own -------------------------------------------------------
    host: str = Field("127.0.0.1", description="Address the HTTP API binds to.")
    port: int = Field(8000, description="Port the HTTP API listens on.")
    data_dir: Path = Field(
        default_factory=_default_data_dir,
        description="Where the embedded store and the local blob folder live.",
    )
    store_url: str | None = Field(
        None, description="Store backend URL; default sqlite:///<data_dir>/postcall.db."
    )
    blob_url: str | None = Field(
        None, description="Blob backend URL; default file://<data_dir>/blobs."
    )
    sqlite_busy_timeout_s: float = Field(
        30.0,
        gt=0,
        le=600,
        description="SQLite store: how long a write waits for another process's lock "
        "before the request answers 503 store_unavailable (s).",
    )
    auth: Literal["required", "disabled"] = Field(
        "required", description="'disabled' allows anonymous access, only on a loopback bind."
    )
    api_keys: str = Field("", description="Comma-separated API keys accepted besides stored ones.")
    max_upload_bytes: int = Field(2 * 1024**3, description="Largest accepted upload (bytes).")
    max_duration_s: float = Field(4 * 3600.0, description="Longest accepted recording (s).")
    max_metadata_bytes: int = Field(
        64 * 1024,
        ge=1024,
        le=16 * 1024**2,
        description="Largest metadata object of a recording or transcript (bytes of JSON); "
        "metadata also nests at most 32 levels, with finite numbers and valid text.",
    )
    whisper_device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Inference device; auto picks CUDA when present."
    )
    whisper_compute_type: str = Field(
        "auto", description="CTranslate2 compute type; auto = int8 on CPU, float16 on GPU."
    )
    whisper_cpu_threads: int = Field(0, description="CPU threads for inference; 0 = all cores.")
    whisper_beam_size: int = Field(5, description="Beam size for decoding.")
    whisper_batch_size: int = Field(
        0,
        ge=0,
        description="Decoding windows run at once (batched inference); 0 = auto (16 on a "
        "GPU, 8 on a CPU, where they are encoded one by one), 1 = one window at a time.",
    )
    whisper_parallel: int = Field(
        0,
        ge=0,
        description="Decoders of the in-process model, each on its share of the CPU threads: "
        "a decoding call's batches are spread over them and a job keeps that many chunks in "
        "flight; 0 = auto (one per thread, at most 4, on a CPU; 1 on a GPU).",
    )
    whisper_min_context_s: float = Field(
        15.0,
        ge=10.0,
        le=30.0,
        description="Least audio context (s) a decoding window is encoded with; a short "
        "window gets its length plus 5 s, at least this. 30 = always Whisper's full window.",
    )
    whisper_idle_unload_s: float = Field(
        0.0,
        ge=0,
        validation_alias=AliasChoices(
            "WHISPER_IDLE_UNLOAD_S", "POSTCALL_WHISPER_IDLE_UNLOAD_S", "whisper_idle_unload_s"
        ),
        description="Drop the loaded model after this many idle seconds (frees GPU "
        "memory); 0 = keep it loaded.",
    )
    whisper_preload: bool = Field(
        False, description="Load the model when a worker starts instead of at its first job."
    )
    whisper_api: Literal["openai", "whispercpp"] = Field(
        "openai",
        description="Remote protocol: OpenAI-compatible /v1/audio/transcriptions or "
        "whisper.cpp's /inference.",
    )
    whisper_concurrency: int = Field(
        4, description="Chunks of one job sent to the remote Whisper service at once."
    )
    whisper_timeout_s: float = Field(300.0, description="Timeout of one remote request (s).")
    whisper_retries: int = Field(
        4, description="Retries of a remote request after a timeout or 5xx, with backoff."
    )
    engine_factory: str | None = Field(
        None,
        description="'package.module:function' building a custom Engine from the settings "
        "(instead of faster-whisper or WHISPER_URL).",
    )
    chunk_max_s: float | None = Field(
        None,
        description="Longest piece a recording is decoded and transcribed in, cut at a "
        "silence; default 300 s in-process (speech packs into full 30 s Whisper windows), "
        "30 s with WHISPER_URL (one request per window, sent in parallel).",
    )

    @property
    def resolved_chunk_max_s(self) -> float:
        if self.chunk_max_s is not None:
            return self.chunk_max_s
        return 30.0 if self.whisper_url else 300.0

    max_transcripts_per_recording: int = Field(
        10,
        ge=1,
        description="Transcripts one recording may have at once; deleting one frees its place.",
    )
    download_url_ttl_s: int = Field(
        6 * 3600,
        ge=1,
        le=7 * 24 * 3600,
        description="Lifetime of a transcript's download_url (s); at most 7 days.",
    )
    secret_key: SecretStr | None = Field(
        None,
        description="Key that signs download links served by postcall (local blob folder) "
        "and, when set, seals webhook signing secrets in the store (AES-GCM); default for "
        "links: one generated once and kept in the store, shared by every API process.",
    )
    public_url: str | None = Field(
        None,
        description="Base URL clients reach postcall at, for the links it hands out; "
        "default: the URL the request came to.",
    )
    idempotency_ttl_s: float = Field(
        24 * 3600.0, gt=0, description="How long an Idempotency-Key's response is kept (s)."
    )

    retention_days: float | None = Field(
        None,
        gt=0,
        description="Recordings, with their transcriptions and every file of theirs, are "
        "deleted this many days after the recording was made; unset = kept until deleted.",
    )
    delete_media_after_transcription: bool = Field(
        False,
        description="Delete a recording's media as soon as none of its transcriptions "
        "waits or runs; the transcripts are kept.",
    )
    webhook_retention_days: float | None = Field(
        30.0,
        gt=0,
        description="Webhook events, their deliveries and attempt logs are deleted this many "
        "days after the event, once nothing is left to deliver.",
    )
    sweep_every_s: float = Field(
        300.0, gt=0, description="How often each worker process runs the retention sweep (s)."
    )

    split_min_s: float = Field(
        600.0,
        description="Recordings with more audio than this (s) are split into units that "
        "any idle worker can take, so several workers share one long recording; set it "
        "above POSTCALL_MAX_DURATION_S to never split.",
    )
    split_unit_s: float | None = Field(
        None,
        description="Longest unit of a split recording (s), cut at a silence; default "
        "the larger of POSTCALL_CHUNK_MAX_S and 300 s.",
    )

    @property
    def resolved_split_unit_s(self) -> float:
        if self.split_unit_s is not None:
            return self.split_unit_s
        return max(self.resolved_chunk_max_s, 300.0)

    # --- offline diarization's speaker model --------------------------------
    speaker_model: Path | None = Field(
        None,
        description="A local ONNX speaker-embedding model (e.g. a WeSpeaker ResNet34 export) "
        "used by diarization instead of the bundled Resemblyzer encoder; unset = bundled. "
        "Read from disk only: nothing is downloaded.",
    )
    speaker_features: Literal["fbank80", "fbank64", "fbank40", "wave"] = Field(
        "fbank80",
        description="What POSTCALL_SPEAKER_MODEL takes: fbankN = [batch, frames, N] Kaldi log "
        "mel filterbanks (25 ms / 10 ms, 16 kHz), wave = [batch, samples] 16 kHz audio.",
    )
    speaker_fbank_window: Literal["hamming", "povey"] = Field(
        "hamming", description="The fbank features' analysis window (WeSpeaker: hamming)."
    )
    speaker_cmn: bool = Field(
        True, description="Subtract the mean over frames from fbank features (WeSpeaker: on)."
    )
    speaker_model_output: str | None = Field(
        None, description="The model output holding the embeddings, when it has several."
    )
    speaker_device: Literal["cpu", "cuda"] = Field(
        "cpu", description="Where onnxruntime runs the speaker model."
    )
    speaker_threads: int = Field(
        0, ge=0, description="CPU threads of the speaker model; 0 = up to 4."
    )

    @field_validator("speaker_model")
    @classmethod
    def _speaker_model_file(cls, value: Path | None) -> Path | None:
        if value is None or str(value) == "":
            return None
        value = value.expanduser()
        if not value.is_file():
            raise ValueError(
                f"POSTCALL_SPEAKER_MODEL={value}: no such file (a local .onnx speaker-embedding "
                "model; unset it to use the bundled encoder)"
            )
        return value

    voiceprint_threshold: float = Field(
        0.80,
        ge=-1.0,
        le=1.0,
        description="Cosine similarity a diarized speaker needs with a voiceprint to be "
        "named after its participant.",
    )
    voiceprint_min_speech_s: float = Field(
        5.0,
        ge=1.0,
        description="Least speech (s) a voiceprint is made from (a track or an uploaded "
        "sample with less is not enrolled).",
    )
    lease_s: float = Field(60.0, description="How long a claimed job stays owned without renewal.")
    max_attempts: int = Field(3, description="Claims of one job before it fails as worker_lost.")
    worker_poll_s: float = Field(1.0, description="How often an idle worker looks for work (s).")
    log_level: str = Field("INFO", description="Logging level.")

    # --- webhooks and outbound requests ---------------------------------------
    allowed_networks: str = Field(
        "",
        description="Comma-separated CIDRs that outbound requests (webhooks, URL imports) "
        "may reach even though they are not public (loopback, private, link-local, CGNAT, ULA).",
    )
    url_import_timeout_s: float = Field(
        300.0,
        gt=0,
        description="Longest a URL import may take, from connecting to the last byte "
        "(every redirect included); a slower server gets 422 fetch_timeout.",
    )
    webhook_schedule: str = Field(
        "0,5,300,1800,7200,18000,36000,36000",
        description="Seconds before each delivery attempt (jittered by ±20%); its length is "
        "the number of attempts.",
    )
    webhook_timeout_s: float = Field(15.0, gt=0, description="Timeout of one webhook request.")
    webhook_lease_s: float = Field(
        60.0,
        gt=0,
        description="How long a dispatcher owns a delivery it claimed; a delivery whose "
        "dispatcher died is retried after it. Must exceed the request timeout.",
    )
    webhook_poll_s: float = Field(1.0, gt=0, description="How often an idle dispatcher looks.")
    webhook_concurrency: int = Field(
        256, ge=1, description="Webhook deliveries one process sends at once."
    )
    webhook_endpoint_concurrency: int = Field(
        64,
        ge=1,
        description="Of those, the most in flight to one endpoint; more wait their turn "
        "(not counted as attempts), so a receiver that never answers cannot hold them all.",
    )
    webhook_rotation_overlap_s: float = Field(
        86400.0,
        ge=0,
        description="After a secret rotation, how long the old secret still signs too.",
    )
    webhook_dispatch: bool = Field(
        True, description="Run a webhook dispatcher in this process (serve and worker)."
    )

    @field_validator("webhook_schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        from postcall.webhooks import parse_schedule

        parse_schedule(value)
        return value

    @field_validator("allowed_networks")
    @classmethod
    def _networks(cls, value: str) -> str:
        from postcall.outbound import parse_networks

        parse_networks(value)
        return value

    @model_validator(mode="after")
    def _lease_over_timeout(self) -> Settings:
        if self.webhook_lease_s <= self.webhook_timeout_s:
            raise ValueError(
                "POSTCALL_WEBHOOK_LEASE_S must be longer than POSTCALL_WEBHOOK_TIMEOUT_S, or "
                "a slow receiver would get each event twice"
            )
        return self

    @field_validator("stt_language")
    @classmethod
    def _lower(cls, value: str) -> str:
        return value.strip().lower()

    @property
    def default_language(self) -> str | None:
        return None if self.stt_language in ("", "auto") else self.stt_language

    @property
    def resolved_store_url(self) -> str:
        return self.store_url or f"sqlite:///{self.data_dir / 'postcall.db'}"

    @property
    def resolved_blob_url(self) -> str:
        return self.blob_url or f"file://{self.data_dir / 'blobs'}"

    @property
    def static_api_keys(self) -> tuple[str, ...]:
        return tuple(k.strip() for k in self.api_keys.split(",") if k.strip())
