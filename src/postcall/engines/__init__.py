"""Speech-to-text engines behind one Protocol (``Engine``)."""

from postcall.engines.base import Engine, EngineOptions, EngineResult

__all__ = ["Engine", "EngineOptions", "EngineResult"]
