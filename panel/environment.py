"""The environment page: headers, every environment variable (secrets masked), protocol, lanes, MT5, outbox."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from django.conf import settings
from django.db.models import Count, Min
from django.utils import timezone

from commands.intake import SUPPORTED_PROTOCOL_MAJOR
from execution.health import run_checks
from panel.payloads import PROTOCOL_VERSION, REQUIRED_HEADERS
from panel.scoping import scope_queryset

# Every variable settings.py reads is found by reading settings.py, so a new one appears here
# without anyone remembering to add it.
_ENV_CALL = re.compile(r"""\benv(?:\.(?:str|bool|int|float|list|db|url|json))?\(\s*["']([A-Z][A-Z0-9_]+)["']""")
_SECRET = re.compile(r"(TOKEN|SECRET|PASSWORD|PASSWD|_KEY)$")

# What PROTOCOL.md §8 and the settings' comments say each one is for.
DESCRIPTIONS: dict[str, str] = {
    "PYTHON_INGEST_TOKEN": "A bearer token accepted for the tenants in PYTHON_INGEST_TENANTS.",
    "PYTHON_INGEST_TENANTS": "Comma-separated tenant ids PYTHON_INGEST_TOKEN may act for.",
    "PYTHON_BRIDGE_URL": "This service's public base URL, used in the panel's snippets.",
    "LARAVEL_INTERNAL_TOKEN": "Bearer token of callbacks to Laravel.",
    "LARAVEL_API_URL": "Laravel's base URL; callbacks wait in the outbox while it is empty.",
    "LARAVEL_WEBHOOK_SECRET": "Standard Webhooks signing secret of callbacks (unsigned when empty).",
    "LARAVEL_PROTECTIVE_ACTIONS_PATH": "Path of protective action reports on Laravel.",
    "LARAVEL_COMMAND_RESULTS_PATH": "Path of command results on Laravel.",
    "DATABASE_URL": "The database (default: an embedded SQLite file).",
    "MT5_BACKEND": "simulator (default), official, mt5linux or manager.",
    "BRIDGE_ENVIRONMENT": "meta.environment of callbacks; the panel's environment badge.",
    "DJANGO_SECRET_KEY": "Django's signing key.",
    "DJANGO_DEBUG": "Never on in production.",
    "IDEMPOTENCY_RETENTION_HOURS": "How long idempotency keys are kept (at least 24 h).",
    "COMMAND_NORMAL_TTL_SECONDS": "A normal command older than this when picked up expires.",
    "RISK_POLL_INTERVAL_MS": "How often the risk monitor evaluates each account.",
    "CALLBACK_RETRY_HOURS": "Callbacks are retried at least this long, then dead-lettered.",
}


@dataclass(frozen=True)
class EnvVar:
    name: str
    is_set: bool
    shown: str
    secret: bool
    description: str


def settings_env_names(path: Path | None = None) -> list[str]:
    source = (path or Path(settings.BASE_DIR) / "bridgeproject" / "settings.py").read_text()
    seen: dict[str, None] = {}
    for name in _ENV_CALL.findall(source):
        seen.setdefault(name, None)
    return list(seen)


def mask_url(url: str) -> str:
    """A URL with its password replaced, so DATABASE_URL can be shown."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":••••••@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _shown(name: str, raw: str | None, secret: bool) -> str:
    if secret:
        # Not even a default: an unset secret falls back to one that must not be on a screen either.
        return "" if raw is None else ("•••••••• (set)" if raw else "(set, empty)")
    if raw is None:
        effective = getattr(settings, name, None)
        return "" if effective in (None, "") else f"default: {effective}"
    if "://" in raw:
        return mask_url(raw)
    return raw


def env_inventory() -> list[EnvVar]:
    rows = []
    for name in settings_env_names():
        raw = os.environ.get(name)
        secret = bool(_SECRET.search(name))
        rows.append(EnvVar(name, raw is not None, _shown(name, raw, secret), secret, DESCRIPTIONS.get(name, "")))
    return rows


def outbox_status(user: Any) -> dict[str, Any]:
    """The callback outbox's lag and dead letters, counted over the tenants the user may see."""
    from callbacks.models import OPEN_STATUSES, CallbackDelivery, DeliveryStatus

    deliveries = scope_queryset(CallbackDelivery.objects.all(), user)
    open_rows = deliveries.filter(status__in=OPEN_STATUSES).aggregate(n=Count("id"), oldest=Min("created_at"))
    oldest = open_rows["oldest"]
    dead = deliveries.filter(status=DeliveryStatus.DEAD)
    return {
        "pending": open_rows["n"],
        "oldest_pending_age_s": round((timezone.now() - oldest).total_seconds(), 1) if oldest else 0.0,
        "dead_letters": dead.count(),
        "recent_dead": list(dead.select_related("tenant", "account").order_by("-dead_at", "-id")[:10]),
        "configured": bool(settings.LARAVEL_API_URL),
    }


def environment_report(user: Any) -> dict[str, Any]:
    health = run_checks()
    checks = health["checks"]
    return {
        "headers": REQUIRED_HEADERS,
        "env": env_inventory(),
        "protocol": {
            "header": SUPPORTED_PROTOCOL_MAJOR,
            "meta": PROTOCOL_VERSION,
            "rule": "X-Protocol-Version major must be 1; meta.protocol_version must be 1.x.",
        },
        "overall": health["status"],
        "checked_at": health["checked_at_utc"],
        "lanes": [("normal", checks.get("normal_lane", {})), ("fast", checks.get("fast_lane", {}))],
        "database": checks.get("database", {}),
        "broker": checks.get("broker", {}),
        "mt5": {"backend": settings.MT5_BACKEND, **checks.get("mt5", {})},
        "callbacks_check": checks.get("callbacks"),
        "outbox": outbox_status(user),
        "bridge_url": settings.PYTHON_BRIDGE_URL,
    }
