from __future__ import annotations

import json
from typing import Any

from django import template

from panel import formatting

register = template.Library()


@register.filter
def as_json(value: Any) -> str:
    """Pretty JSON for a <pre> block (autoescaped by the template like any string)."""
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


@register.filter
def utc(value: Any) -> str:
    """A time as the panel writes every time: 2026-05-29 12:00:00 UTC."""
    return formatting.utc(value)


@register.filter
def money(value: Any, account: Any = None) -> str:
    """An amount with the account's currency digits."""
    return formatting.money(value, account)
