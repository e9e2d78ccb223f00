"""postcall: self-hosted post-call transcription."""

import os

# onnxruntime (Silero VAD, the speaker encoder) otherwise keeps a device id and queued
# usage events under ~/.cache/Microsoft and sends them out: a self-hosted service makes
# no connection its operator did not configure. Set before anything imports it.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

__version__ = "0.1.0"
