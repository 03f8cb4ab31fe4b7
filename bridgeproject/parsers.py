"""A JSON parser that refuses what JSON does not allow (NaN, Infinity) and absurd nesting."""

from __future__ import annotations

import json
from typing import Any

from rest_framework.exceptions import ParseError
from rest_framework.parsers import BaseParser

MAX_DEPTH = 32


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def _depth(value: Any, limit: int) -> int:
    """Depth of nested containers, stopping once past the limit."""
    stack = [(value, 1)]
    deepest = 0
    while stack:
        item, level = stack.pop()
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


def loads_strict(raw: bytes) -> Any:
    """Parse a request body; raise ParseError with a clear message when it is not strict JSON."""
    try:
        data = json.loads(raw, parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ParseError(f"The body is not valid JSON: {exc}") from exc
    if _depth(data, MAX_DEPTH) > MAX_DEPTH:
        raise ParseError(f"The body nests deeper than {MAX_DEPTH} levels.")
    return data


class StrictJSONParser(BaseParser):
    media_type = "application/json"

    def parse(self, stream: Any, media_type: str | None = None, parser_context: dict | None = None) -> Any:
        return loads_strict(stream.read() if stream is not None else b"")
