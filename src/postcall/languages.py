"""The language codes Whisper knows (kept here so the API never imports the engine)."""

from __future__ import annotations

import json
from pathlib import Path

WHISPER_LANGUAGES = frozenset(
    [
        "af",
        "am",
        "ar",
        "as",
        "az",
        "ba",
        "be",
        "bg",
        "bn",
        "bo",
        "br",
        "bs",
        "ca",
        "cs",
        "cy",
        "da",
        "de",
        "el",
        "en",
        "es",
        "et",
        "eu",
        "fa",
        "fi",
        "fo",
        "fr",
        "gl",
        "gu",
        "ha",
        "haw",
        "he",
        "hi",
        "hr",
        "ht",
        "hu",
        "hy",
        "id",
        "is",
        "it",
        "ja",
        "jw",
        "ka",
        "kk",
        "km",
        "kn",
        "ko",
        "la",
        "lb",
        "ln",
        "lo",
        "lt",
        "lv",
        "mg",
        "mi",
        "mk",
        "ml",
        "mn",
        "mr",
        "ms",
        "mt",
        "my",
        "ne",
        "nl",
        "nn",
        "no",
        "oc",
        "pa",
        "pl",
        "ps",
        "pt",
        "ro",
        "ru",
        "sa",
        "sd",
        "si",
        "sk",
        "sl",
        "sn",
        "so",
        "sq",
        "sr",
        "su",
        "sv",
        "sw",
        "ta",
        "te",
        "tg",
        "th",
        "tk",
        "tl",
        "tr",
        "tt",
        "uk",
        "ur",
        "uz",
        "vi",
        "yi",
        "yo",
        "zh",
        "yue",
    ]
)


def normalize_language(value: str | None, default: str | None) -> str | None:
    """A validated language code, or None for detection ('auto').

    ``value`` None takes ``default`` (STT_LANGUAGE). Raises ``ValueError`` naming the
    problem for an unknown code.
    """
    if value is None:
        return default
    code = value.strip().lower()
    if code in ("auto", ""):
        return None
    if code not in WHISPER_LANGUAGES:
        raise ValueError(
            f"unknown language {value!r}: use 'auto' or a Whisper language code such as "
            "'en', 'de', 'es', 'fr'"
        )
    return code


MULTILINGUAL_VOCABULARY = 51865
"""Tokens of a multilingual Whisper vocabulary; English-only models have one fewer.

CTranslate2 tells the two apart by this count, so reading it decides what the model
will do without loading it."""


def english_only_model(model: str) -> bool:
    """Whether WHISPER_MODEL names an English-only model, decided without loading it.

    A local CTranslate2 directory is English-only when its vocabulary has fewer than
    ``MULTILINGUAL_VOCABULARY`` tokens (the bundled tiny.en sits in a folder named
    ``model``, so the name alone would not tell). Otherwise the name decides: a size
    name or repository ending in ``.en`` (``tiny.en``, ``distil-small.en``,
    ``Systran/faster-whisper-base.en``). The API process applies this to its own
    WHISPER_MODEL: in a split deployment it must be set as on the workers (a directory
    that does not exist on the API machine falls back to its name).
    """
    path = Path(model).expanduser()
    size = _vocabulary_size(path) if path.is_dir() else None
    if size is not None:
        return size < MULTILINGUAL_VOCABULARY
    return model.rstrip("/").lower().endswith(".en")


def _vocabulary_size(directory: Path) -> int | None:
    text_vocab, json_vocab = directory / "vocabulary.txt", directory / "vocabulary.json"
    try:
        if text_vocab.is_file():
            with text_vocab.open("rb") as fh:
                return sum(1 for line in fh if line.rstrip(b"\r\n"))
        if json_vocab.is_file():
            return len(json.loads(json_vocab.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return None
    return None


def model_label(model: str) -> str:
    """How error messages name WHISPER_MODEL: a size name as is, a directory by its
    name (with its parent's when the name is a generic ``model``, as in the bundled
    package), never the server's whole layout."""
    path = Path(model.rstrip("/"))
    if len(path.parts) <= 1:
        return model
    if path.name.lower() in ("model", "models") and len(path.parts) > 1:
        return f"{path.parent.name}/{path.name}"
    return path.name


def language_for_model(language: str | None, *, model: str, english_only: bool) -> str | None:
    """The language a job runs with: an English-only model takes ``en`` (and ``None``,
    detection, means ``en`` on it); any other code is refused (``ValueError``)."""
    if not english_only or language == "en":
        return language
    if language is None:
        return "en"
    raise ValueError(
        f"model {model_label(model)!r} is English-only: language {language!r} is not "
        "supported; use 'en' (or 'auto', which is English on this model), or configure "
        "a multilingual WHISPER_MODEL"
    )
