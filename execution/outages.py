"""Whether the terminal has been unreachable lately, as every process sees it (health reads it).

The lanes and the monitor note a connection failure when MT5 answers one; the next success in
the same process clears it. Kept in the shared cache, so the web process's health check sees
what the workers saw.
"""

from __future__ import annotations

from typing import Any

from django.core.cache import cache
from django.utils import timezone

from execution.gateway import IPC_ERRORS, TradeResult
from execution.simulator import constants as c

KEY = "bridge:mt5:last-connection-failure"
# A failure older than this no longer makes health degraded.
WINDOW_SECONDS = 15.0
CONNECTION_CODES = frozenset({c.TRADE_RETCODE_CONNECTION, *IPC_ERRORS})

_noted_here = False


def note_failure(detail: str) -> None:
    global _noted_here
    cache.set(KEY, {"at": timezone.now().timestamp(), "detail": detail[:300]}, timeout=3600)
    _noted_here = True


def note_success() -> None:
    """Clear the failure this process noted; costs nothing when there was none."""
    global _noted_here
    if _noted_here:
        cache.delete(KEY)
        _noted_here = False


def note_result(result: TradeResult) -> None:
    if result.retcode in CONNECTION_CODES:
        note_failure(f"{result.retcode_name}: {result.message}")
    elif result.ok:
        note_success()


def recent_failure() -> dict[str, Any] | None:
    """The last connection failure if it is recent: {"seconds_ago", "detail"}; else None."""
    noted = cache.get(KEY)
    if not noted:
        return None
    ago = timezone.now().timestamp() - noted["at"]
    return {"seconds_ago": round(ago, 1), "detail": noted["detail"]} if ago <= WINDOW_SECONDS else None
