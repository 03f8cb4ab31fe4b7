"""MT5's group masks (``MT5_MANAGER_GROUPS``, the Manager API's ``*ByGroup`` calls): a
comma-separated list of masks, ``*`` standing for any run of characters (the group path's
``\\`` included), a leading ``!`` excluding what it matches; letters compare without case, as
MT5's group names do. ``demo\\*,real\\pro*,!real\\pro-test`` is every demo group and the real
``pro`` groups but one. An empty list is every group."""

from __future__ import annotations

import re
from functools import lru_cache


@lru_cache(maxsize=64)
def _compiled(masks: str) -> tuple[tuple[re.Pattern[str], ...], tuple[re.Pattern[str], ...]]:
    include: list[re.Pattern[str]] = []
    exclude: list[re.Pattern[str]] = []
    for part in (p.strip() for p in masks.split(",")):
        if not part or part == "!":
            continue
        negated = part.startswith("!")
        body = part[1:] if negated else part
        pattern = re.compile(".*".join(re.escape(piece) for piece in body.split("*")), re.IGNORECASE | re.DOTALL)
        (exclude if negated else include).append(pattern)
    return tuple(include), tuple(exclude)


def group_matches(group: str, masks: str) -> bool:
    """Whether ``group`` is within ``masks``. Only exclusions: every group but those."""
    include, exclude = _compiled(masks or "*")
    if include and not any(p.fullmatch(group) for p in include):
        return False
    return not any(p.fullmatch(group) for p in exclude)
