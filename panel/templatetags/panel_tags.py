from __future__ import annotations

import json
from typing import Any

from django import template

register = template.Library()


@register.filter
def as_json(value: Any) -> str:
    """Pretty JSON for a <pre> block (autoescaped by the template like any string)."""
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)
