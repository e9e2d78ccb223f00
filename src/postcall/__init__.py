"""postcall: self-hosted post-call transcription."""

__version__ = "0.1.0"
