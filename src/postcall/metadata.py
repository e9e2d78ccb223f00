"""What client JSON may hold: bounded, finite, valid text, sane dates.

Everything a client sends as JSON (a request body, a ``metadata`` form field) is kept
and later rendered back in listings, transcript objects, webhook payloads and
downloads. So it is checked once, where it comes in, against what every one of those
can render:

- nesting at most ``MAX_DEPTH`` containers deep (a deeper value cannot be serialised
  back, and Python's parser recurses on it: 10,000 levels are a ``RecursionError``);
- numbers finite (no ``NaN``/``Infinity``, no ``1e999``) and integers within 64 bits;
- text valid Unicode (no lone surrogate like ``"\\ud800"``), in keys and values;
- ``metadata`` at most ``max_bytes`` as UTF-8 JSON;
- ``metadata.started_at`` an ISO 8601 time between ``MIN_YEAR`` and ``MAX_YEAR``.

Refusals are ``InvalidInput`` naming the field (``metadata.participants[0].name``).
``renderable`` is the read side's guard for data stored before these rules.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from postcall.domain import STARTED_AT_YEARS
from postcall.errors import InvalidInput

log = logging.getLogger(__name__)

MAX_DEPTH = 32
"""Containers (objects, lists) a metadata value may nest, itself included."""

MAX_BODY_DEPTH = 64
"""Nesting a JSON request body may have before it is parsed at all."""

MAX_METADATA_BYTES = 64 * 1024
"""Default size limit of one metadata object (POSTCALL_MAX_METADATA_BYTES)."""

MAX_INT = 2**63 - 1
MIN_YEAR, MAX_YEAR = STARTED_AT_YEARS


def _label(key: str) -> str:
    """A key as a path part that can always be rendered back (odd keys escaped)."""
    if key and key.isprintable() and _is_text(key) and not any(c in key for c in ".[]'\""):
        return f".{key}"
    return f"[{key!a}]"


def _is_text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[{}\[\]:]')


def nesting(raw: str) -> tuple[int, str | None]:
    """How deep ``raw`` JSON nests, without recursing, and the top-level key under
    which it nests deepest (None when the deepest point is not under an object key)."""
    depth = deepest = 0
    top_key = deepest_key = last_string = None
    for match in _TOKENS.finditer(raw):
        token = match.group()
        if token[0] == '"':
            if depth == 1:
                last_string = token[1:-1]
        elif token == ":":
            if depth == 1:
                top_key = last_string
        elif token in "{[":
            depth += 1
            if depth > deepest:
                deepest, deepest_key = depth, top_key if depth > 1 else None
        else:
            depth -= 1
    return deepest, deepest_key


def parse_json(raw: str | bytes, field: str, *, max_depth: int = MAX_BODY_DEPTH) -> Any:
    """Parse JSON a client sent, strictly (see the module); ``InvalidInput`` on ``field``.

    The nesting is measured before parsing, so no input can exhaust the stack."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidInput(
                f"{field} is not valid JSON: not UTF-8 ({exc.reason} at byte {exc.start})",
                field=field,
            ) from None
    depth, key = nesting(raw)
    if depth > max_depth:
        where = f"{field}{_label(key)}" if key is not None and field != "body" else key or field
        raise InvalidInput(f"{where} is nested more than {max_depth} levels deep", field=where)

    try:
        value = json.loads(raw)  # NaN and Infinity come back as floats: refused below
    except RecursionError:  # cannot happen after the depth check; never a 500 anyway
        raise InvalidInput(f"{field} is nested too deeply", field=field) from None
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{field} is not valid JSON: {exc}", field=field) from None
    except ValueError:  # an integer over Python's digit limit
        raise InvalidInput(
            f"{field} holds a number with too many digits; send it as a string", field=field
        ) from None
    check_value(value, "" if field == "body" else field, max_depth=max_depth)
    return value


def check_value(value: Any, path: str, *, max_depth: int = MAX_DEPTH) -> None:
    """Refuse what cannot be stored and rendered back (see the module), iteratively."""
    stack: list[tuple[Any, str, int]] = [(value, path, 0)]
    while stack:
        item, where, depth = stack.pop()
        shown = where.lstrip(".") or "body"
        if isinstance(item, Mapping | list | tuple):
            depth += 1
            if depth > max_depth:
                raise InvalidInput(
                    f"{shown} is nested more than {max_depth} levels deep", field=shown
                )
            if isinstance(item, Mapping):
                for key, child in item.items():
                    if not isinstance(key, str):
                        raise InvalidInput(f"{shown} has a key that is not text", field=shown)
                    if not _is_text(key):
                        raise InvalidInput(
                            f"{shown} has a key that is not valid Unicode text "
                            f"({key!a}: a lone surrogate)",
                            field=shown,
                        )
                    stack.append((child, f"{where}{_label(key)}", depth))
            else:
                stack.extend((child, f"{where}[{i}]", depth) for i, child in enumerate(item))
        elif isinstance(item, str):
            if not _is_text(item):
                raise InvalidInput(
                    f"{shown} is not valid Unicode text ({ascii(item)[:60]}: a lone surrogate)",
                    field=shown,
                )
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, int):
            if abs(item) > MAX_INT:
                raise InvalidInput(
                    f"{shown} is a number beyond 64 bits; send it as a string", field=shown
                )
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise InvalidInput(
                    f"{shown} must be a finite number, not {item} (NaN and Infinity are not "
                    "JSON numbers)",
                    field=shown,
                )
        else:
            raise InvalidInput(
                f"{shown} must be JSON (object, list, text, number, true/false/null)",
                field=shown,
            )


def check_metadata(
    metadata: Mapping[str, Any], field: str = "metadata", *, max_bytes: int = MAX_METADATA_BYTES
) -> None:
    """Refuse metadata that breaks the rules of the module; ``InvalidInput`` on its field."""
    check_value(metadata, field)
    size = len(json.dumps(metadata, ensure_ascii=False).encode())
    if size > max_bytes:
        raise InvalidInput(
            f"{field} is {size} bytes as JSON; at most {max_bytes} (POSTCALL_MAX_METADATA_BYTES)",
            field=field,
        )
    if "started_at" in metadata:
        parse_time(metadata["started_at"], f"{field}.started_at")


def parse_time(raw: object, field: str) -> datetime:
    """An ISO 8601 time (a naive one is UTC) within MIN_YEAR..MAX_YEAR."""
    if not isinstance(raw, str):
        raise InvalidInput(f"{field} must be an ISO 8601 time as text", field=field)
    try:
        value = datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(
            f"{field} is not an ISO 8601 time with a valid offset, e.g. "
            "'2024-05-01T14:30:00Z' or '2024-05-01T16:30:00+02:00'",
            field=field,
        ) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    try:
        year = value.astimezone(UTC).year
    except OverflowError:  # e.g. 0001-01-01 with a positive offset
        year = value.year
    if not MIN_YEAR <= year <= MAX_YEAR:
        raise InvalidInput(
            f"{field} is in the year {value.year}; it must lie between {MIN_YEAR} and {MAX_YEAR}",
            field=field,
        )
    return value.astimezone(UTC)


def renderable(raw: str) -> dict[str, Any]:
    """Stored metadata as something every read path can render.

    Metadata stored before the rules above may be too deep, hold NaN or lone
    surrogates: such values are replaced (null, U+FFFD) rather than failing a listing.
    """
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        log.warning("stored metadata is unreadable; shown as empty")
        return {}
    if not isinstance(value, dict):
        return {}
    return renderable_object(value)


def renderable_object(value: dict[str, Any]) -> dict[str, Any]:
    """A stored object as it can be rendered: itself when it keeps the rules, else with
    odd values replaced (null for NaN or what nests too deep, U+FFFD for surrogates)."""
    try:
        check_value(value, "")
        return value
    except InvalidInput:
        log.warning("stored client JSON breaks the rules; odd values shown as null")
    cleaned = _cleaned(value, 0)
    return cleaned if isinstance(cleaned, dict) else {}


def _cleaned(value: Any, depth: int) -> Any:
    if isinstance(value, dict | list):
        if depth >= MAX_DEPTH:
            return None
        if isinstance(value, list):
            return [_cleaned(v, depth + 1) for v in value]
        return {_fixed(str(k)): _cleaned(v, depth + 1) for k, v in value.items()}
    if isinstance(value, str):
        return _fixed(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT:
        return str(value)
    return value


_SURROGATE = re.compile("[\ud800-\udfff]")


def _fixed(text: str) -> str:
    return _SURROGATE.sub("\ufffd", text)
