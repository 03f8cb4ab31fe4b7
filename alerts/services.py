"""Raising alerts: a row the panel shows until acknowledged, and a message through apprise.

apprise is one library for e-mail, Slack, Teams, Telegram, webhooks and ~100 more services:
`ALERT_URLS` lists where to send (apprise URLs, separated by spaces or commas). Sending runs on
a daemon thread after the commit, so raising an alert never holds up the code that saw the
problem (a protective action, a delivery loop); a send that fails is recorded on the row.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import apprise
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from alerts.models import Alert

logger = logging.getLogger("bridge.alerts")


def alert_raise(*, kind: str, subject: str, title: str, body: str = "", tenant_id: str = "", **extra: Any) -> bool:
    """Tell operators, once per (kind, subject) until acknowledged; False when already open."""
    severity = extra.pop("severity", Alert.Severity.CRITICAL)
    try:
        with transaction.atomic():
            alert = Alert.objects.create(
                kind=kind, subject=subject[:128], title=title[:200], body=body, tenant_id=tenant_id, severity=severity
            )
    except IntegrityError:
        return False  # the same alert is open already
    logger.error("alert", extra={"kind": kind, "subject": subject, "title": title})
    transaction.on_commit(lambda: _send_soon(alert.pk))
    return True


def alert_acknowledge(*, alert: Alert, user: Any) -> bool:
    """Mark an open alert as seen by `user`; False when it was acknowledged already."""
    return bool(
        Alert.objects.filter(pk=alert.pk, acknowledged_at__isnull=True).update(
            acknowledged_at=timezone.now(), acknowledged_by=user
        )
    )


def destinations() -> list[str]:
    return [url for url in str(settings.ALERT_URLS).replace(",", " ").split() if url]


def _send_soon(pk: int) -> None:
    if not destinations():
        return
    threading.Thread(target=send, args=(pk,), name="alert-send", daemon=True).start()


def send(pk: int) -> bool:
    """Send one alert to every ALERT_URLS destination and record the outcome on its row."""
    alert = Alert.objects.get(pk=pk)
    notifier = apprise.Apprise()
    for url in destinations():
        notifier.add(url)
    try:
        ok = bool(
            notifier.notify(
                title=f"[{settings.BRIDGE_ENVIRONMENT}] {alert.title}",
                body=alert.body or alert.title,
                notify_type=apprise.NotifyType.FAILURE
                if alert.severity == Alert.Severity.CRITICAL
                else apprise.NotifyType.WARNING,
            )
        )
        error = "" if ok else "apprise: no destination accepted the alert"
    except Exception as exc:  # an alert that cannot be sent must never break its caller
        ok, error = False, f"{type(exc).__name__}: {exc}"
    Alert.objects.filter(pk=pk).update(sent_at=timezone.now() if ok else None, send_error=error)
    if not ok:
        logger.warning("alert not sent", extra={"alert_id": pk, "error": error})
    return ok
