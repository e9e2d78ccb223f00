"""The language codes Whisper knows (kept here so the API never imports the engine)."""

from __future__ import annotations

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
