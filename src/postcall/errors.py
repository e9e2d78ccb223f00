"""One error family for everything postcall refuses or fails at.

Every error carries a stable ``code`` (used on the wire as the error code, and in a
failed transcription's ``error.code``) and a ``retryable`` flag. Adapters wrap
foreign exceptions into one of these; the API maps the family to HTTP in one table
(``postcall.api.app``)::

    PostcallError
    ├── InvalidInput ............. bad request data (a field, an id, a body)
    │   ├── EmptyFile ............ a zero-byte upload
    │   ├── InvalidWebhook ....... a webhook endpoint's URL, events or secret (400)
    │   │   └── UrlNotAllowed .... a URL whose host is not public (and not allowed)
    │   │       └── UrlUnresolvable  a URL whose host does not resolve
    │   ├── ImportUrlNotAllowed .. a URL to import from that is not public http(s) (422)
    │   ├── Unsupported .......... an unknown provider, option or model (lists the known)
    │   └── IdempotencyMismatch .. an Idempotency-Key reused with another request
    ├── NotFound ................. unknown id (or one of another tenant)
    ├── Conflict ................. id already taken, state does not allow it
    │   ├── LimitReached ......... a recording already has its most transcripts
    │   └── InFlight ............. the first request with this Idempotency-Key still runs
    ├── Forbidden ................ a signed link that is expired or tampered with
    ├── Unauthorized ............. missing or wrong API key
    ├── FeatureDisabled .......... the endpoint is switched off by a setting
    ├── PayloadTooLarge .......... upload over POSTCALL_MAX_UPLOAD_BYTES
    ├── FetchFailed .............. a URL import's remote answered an error or not at all
    │   └── FetchTimeout ......... the remote took longer than POSTCALL_URL_IMPORT_TIMEOUT_S
    ├── MediaError ............... the media cannot be transcribed
    │   ├── UnsupportedMedia ..... not a container/codec we can read
    │   ├── NoAudioStream ........ a readable file without any audio stream
    │   ├── EmptyAudio ........... an audio stream with nothing decodable in it
    │   ├── DurationExceeded ..... longer than POSTCALL_MAX_DURATION_S
    │   └── NoSpeech ............. decodable audio, but no speech was found
    ├── ModelUnavailable ......... the Whisper model cannot be loaded
    ├── EngineError .............. inference failed (retryable)
    ├── EngineUnavailable ........ the remote Whisper service does not answer (retryable)
    ├── Unavailable .............. a backend postcall needs does not answer (retryable, 503)
    │   ├── StoreUnavailable ..... the store (Redis, SQLite) does not answer
    │   └── BlobsUnavailable ..... the blob store (S3, the local folder) does not answer
    └── WorkerLost ............... the job killed its worker too many times
"""

from __future__ import annotations


class PostcallError(Exception):
    """Base of every error postcall raises on purpose."""

    code: str = "internal_error"
    retryable: bool = False

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class InvalidInput(PostcallError):
    code = "invalid_input"

    def __init__(self, message: str, *, field: str | None = None, code: str | None = None):
        super().__init__(message, code=code)
        self.field = field


class EmptyFile(InvalidInput):
    code = "empty_file"


class InvalidWebhook(InvalidInput):
    code = "invalid_webhook"


class UrlNotAllowed(InvalidWebhook):
    code = "url_not_allowed"


class UrlUnresolvable(UrlNotAllowed):
    """A URL's host does not resolve (refused like a non-public one for webhooks; for a
    URL import it is a network error, ``FetchFailed``)."""


class ImportUrlNotAllowed(InvalidInput):
    """A URL to import from: not http(s), with credentials, or a non-public host (the
    same rule as webhooks, ``UrlNotAllowed``, answered 422 like other bad input)."""

    code = "url_not_allowed"


class Unsupported(InvalidInput):
    code = "unsupported"


class IdempotencyMismatch(InvalidInput):
    code = "idempotency_key_reused"


class NotFound(PostcallError):
    code = "not_found"


class Conflict(PostcallError):
    code = "conflict"


class LimitReached(Conflict):
    code = "transcript_limit"


class InFlight(Conflict):
    code = "idempotency_in_flight"


class Forbidden(PostcallError):
    code = "forbidden"


class Unauthorized(PostcallError):
    code = "unauthorized"


class FeatureDisabled(PostcallError):
    code = "disabled"


class PayloadTooLarge(PostcallError):
    code = "payload_too_large"


class FetchFailed(PostcallError):
    """Fetching a URL to import failed: the remote's status or the network error."""

    code = "fetch_failed"

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.field = "url"


class FetchTimeout(FetchFailed):
    code = "fetch_timeout"


class MediaError(PostcallError):
    code = "unsupported_media"


class UnsupportedMedia(MediaError):
    code = "unsupported_media"


class NoAudioStream(MediaError):
    code = "no_audio_stream"


class EmptyAudio(MediaError):
    code = "empty_audio"


class DurationExceeded(MediaError):
    code = "duration_exceeded"


class NoSpeech(MediaError):
    code = "no_speech"


class ModelUnavailable(PostcallError):
    code = "model_unavailable"


class EngineError(PostcallError):
    code = "engine_error"
    retryable = True


class EngineUnavailable(PostcallError):
    code = "engine_unavailable"
    retryable = True


class Unavailable(PostcallError):
    """A backend does not answer (down, restarting, unreachable): nothing was done that
    the caller can see, and the same request may succeed later."""

    code = "unavailable"
    retryable = True


class StoreUnavailable(Unavailable):
    code = "store_unavailable"


class BlobsUnavailable(Unavailable):
    code = "blobs_unavailable"


class WorkerLost(PostcallError):
    code = "worker_lost"
