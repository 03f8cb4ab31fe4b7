"""A JSON parser that refuses what JSON does not allow (NaN, Infinity), absurd nesting, a key twice in
one object (RFC 8259 leaves its meaning to the parser: which `command_type` would run?), and strings
no database column can hold: an unpaired UTF-16 surrogate escape ("\\ud800") or a NUL ("\\u0000")."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from rest_framework.exceptions import ParseError
from rest_framework.parsers import BaseParser

from bridgeproject.errors import BridgeError

MAX_DEPTH = 32
# A \uD800–\uDFFF escape: json.loads joins a valid pair into one character and leaves a lone one
# in the string, where it fails every UTF-8 encode later; PostgreSQL text and jsonb refuse NUL. Both
# were 500s (the whole envelope, unknown keys included, is stored). Only escapes can produce them.
_SUSPECT_ESCAPE = re.compile(rb"\\[uU](?:[dD][89a-fA-F][0-9a-fA-F]{2}|0000)")
_UNSTORABLE = re.compile("[\ud800-\udfff\x00]")


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def _depth(value: Any, limit: int) -> int:
    """Depth of nested containers, stopping once past the limit."""
    stack = [(value, 1)]
    deepest = 0
    while stack:
        item, level = stack.pop()
        children: Iterable[Any]
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        if deepest > limit:
            return deepest
        stack.extend((child, level + 1) for child in children)
    return deepest


def _has_unstorable_text(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _UNSTORABLE.search(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json's object_pairs_hook: the object, unless a key appears twice in it."""
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return result


def loads_strict(raw: bytes) -> Any:
    """Parse a request body; raise ParseError with a clear message when it is not strict JSON, and
    a 400 `duplicate_json_key` when an object holds a key twice."""
    try:
        data = json.loads(raw, parse_constant=_refuse_constant, object_pairs_hook=_object)
    except _DuplicateKey as exc:
        raise BridgeError(
            400,
            "duplicate_json_key",
            f"The body has the key {exc.key[:64]!r} twice in one object; send each key once.",
        ) from None
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ParseError(f"The body is not valid JSON: {exc}") from exc
    # Nesting needs an opening bracket a level: a body with fewer cannot be too deep.
    if raw.count(b"{") + raw.count(b"[") > MAX_DEPTH and _depth(data, MAX_DEPTH) > MAX_DEPTH:
        raise ParseError(f"The body nests deeper than {MAX_DEPTH} levels.")
    if _SUSPECT_ESCAPE.search(raw) and _has_unstorable_text(data):
        raise ParseError("The body has a string with a NUL character or an unpaired UTF-16 surrogate escape.")
    return data


class StrictJSONParser(BaseParser):
    media_type = "application/json"

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Mapping[str, Any] | None = None) -> Any:
        return loads_strict(stream.read() if stream is not None else b"")
