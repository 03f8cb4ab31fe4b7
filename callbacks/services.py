"""Writes to the callback outbox (enqueue, re-send) and its health check."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Min
from django.utils import timezone

from bridgeproject.dbutil import insert_unless_conflicting
from bridgeproject.jsonutil import jsonable, utc_iso
from callbacks.models import OPEN_STATUSES, CallbackDelivery, DeliveryStatus, RequestType
from policies.models import TradingAccount
from tenancy.models import Tenant

logger = logging.getLogger("bridge.callbacks")

PROTOCOL_VERSION = "1.0"
# Health turns degraded when the oldest undelivered callback has waited longer than this.
HEALTH_MAX_PENDING_AGE_SECONDS = 60.0


def callback_path(request_type: str) -> str:
    """The Laravel path a callback type is posted to (configurable per type)."""
    paths: dict[str, str] = {
        RequestType.PROTECTIVE_ACTION_REPORT: settings.LARAVEL_PROTECTIVE_ACTIONS_PATH,
        RequestType.COMMAND_RESULT: settings.LARAVEL_COMMAND_RESULTS_PATH,
    }
    if request_type not in paths:
        raise ValueError(f"unknown callback request_type {request_type!r}")
    return str(paths[request_type])


def callback_envelope(
    *,
    tenant: Tenant,
    account: TradingAccount,
    request_type: str,
    payload: dict[str, Any],
    request_id: uuid.UUID,
    idempotency_key: str,
    correlation_id: str,
    session_id: str,
    correlation_group: str,
    sent_at: datetime,
) -> dict[str, Any]:
    """The envelope of PROTOCOL.md §4, shaped like the panel's protective action callback."""
    return {
        "meta": {
            "protocol_version": PROTOCOL_VERSION,
            "request_id": str(request_id),
            "correlation_id": correlation_id,
            "idempotency_key": idempotency_key,
            "tenant_id": tenant.tenant_id,
            "environment": settings.BRIDGE_ENVIRONMENT,
            "source": "python",
            "sent_at_utc": utc_iso(sent_at),
        },
        "actor": {
            "trading_account_id": account.trading_account_id,
            "account_login": int(account.login),
            "server": account.server,
            "platform": account.platform or "MT5",
        },
        "context": {"session_id": session_id, "correlation_group": correlation_group},
        "request": {"type": request_type, "version": "1"},
        "payload": jsonable(payload),
    }


_INSERT_FIELDS = [f for f in CallbackDelivery._meta.concrete_fields if not f.primary_key]


def callback_enqueue(
    *,
    tenant: Tenant,
    account: TradingAccount,
    request_type: str,
    payload: dict[str, Any],
    dedup_key: str,
    correlation_id: str,
    session_id: str,
    correlation_group: str,
    source_kind: str = "",
    source_id: str = "",
) -> CallbackDelivery:
    """Owe Laravel a callback. Call it inside the event's transaction: the row commits or rolls back with it.

    The callback's identity — `meta.idempotency_key` (also `X-Idempotency-Key`) and
    `meta.request_id` (also `webhook-id`) — is minted here, two UUIDs, never derived from a local
    row number: a rebuilt database, a restored backup or a second bridge reporting to the same
    Laravel can never reuse one. Every attempt sends them unchanged (the envelope is built now).

    `dedup_key` is the caller's local name for the event (``command-result:<pk>``,
    ``protective-action:<action pk>:<report sequence>``): a second enqueue with the same (tenant,
    dedup_key) returns the first row unchanged, identity included, so a retried event never
    reports twice. It is never sent. The row is written even while LARAVEL_API_URL is empty; it
    waits, and health says so.
    """
    if account.tenant_id != tenant.pk:
        raise ValueError("a callback's account must belong to its tenant")
    if not 1 <= len(dedup_key) <= 255:
        raise ValueError("a callback needs a dedup key of 1 to 255 characters")
    now = timezone.now()
    request_id = uuid.uuid4()
    idempotency_key = str(uuid.uuid4())
    correlation_id = correlation_id or str(uuid.uuid4())
    delivery = CallbackDelivery(
        tenant=tenant,
        account=account,
        request_type=request_type,
        path=callback_path(request_type),
        envelope=callback_envelope(
            tenant=tenant,
            account=account,
            request_type=request_type,
            payload=payload,
            request_id=request_id,
            idempotency_key=idempotency_key,
            correlation_id=correlation_id,
            session_id=session_id,
            correlation_group=correlation_group,
            sent_at=now,
        ),
        request_id=request_id,
        idempotency_key=idempotency_key,
        dedup_key=dedup_key,
        correlation_id=correlation_id,
        source_kind=source_kind,
        source_id=source_id,
        status=DeliveryStatus.PENDING,
        next_attempt_at=now,
        created_at=now,
    )
    # INSERT ... ON CONFLICT DO NOTHING RETURNING id: one round trip, and an event already owed (a
    # retried event, or a concurrent enqueue that won the race) leaves the caller's transaction
    # intact and returns the first row.
    delivery.pk = insert_unless_conflicting(delivery, _INSERT_FIELDS)
    if delivery.pk is None:  # the event was already owed
        return CallbackDelivery.objects.get(tenant=tenant, dedup_key=dedup_key)
    delivery._state.adding = False
    logger.info(
        "callback enqueued",
        extra={
            "callback_id": delivery.pk,
            "request_type": request_type,
            "idempotency_key": idempotency_key,
            "dedup_key": dedup_key,
        },
    )
    return delivery


@transaction.atomic
def callback_resend(*, delivery: CallbackDelivery) -> CallbackDelivery:
    """Send a dead (or delivered) callback again now, in a new retry window; its attempts stay in history."""
    row = CallbackDelivery.objects.select_for_update().get(pk=delivery.pk)
    if row.status == DeliveryStatus.DELIVERING:
        # A process holds it right now; it finishes (or its lease runs out) on its own.
        return row
    now = timezone.now()
    row.status = DeliveryStatus.PENDING
    row.next_attempt_at = now
    row.window_started_at = None
    row.dead_at = None
    row.delivered_at = None
    row.save(update_fields=["status", "next_attempt_at", "window_started_at", "dead_at", "delivered_at"])
    logger.info("callback re-sent", extra={"callback_id": row.pk, "idempotency_key": row.idempotency_key})
    return row


def callbacks_health(*, now: datetime | None = None) -> dict[str, Any]:
    """Is the outbox draining? Degraded on dead letters, an old pending row, or rows waiting for a URL."""
    current = now or timezone.now()
    open_rows = CallbackDelivery.objects.filter(status__in=OPEN_STATUSES).aggregate(
        n=Count("id"), oldest=Min("created_at")
    )
    pending = int(open_rows["n"])
    oldest = open_rows["oldest"]
    age = max((current - oldest).total_seconds(), 0.0) if oldest else 0.0
    dead = CallbackDelivery.objects.filter(status=DeliveryStatus.DEAD).count()
    configured = bool(settings.LARAVEL_API_URL)
    degraded = dead > 0 or age > HEALTH_MAX_PENDING_AGE_SECONDS or (pending > 0 and not configured)
    return {
        "status": "degraded" if degraded else "ok",
        "pending": pending,
        "oldest_pending_age_s": round(age, 3),
        "dead_letters": dead,
        "configured": configured,
    }


def callbacks_prune_delivered(*, now: datetime | None = None, batch: int = 5000) -> int:
    """Delete delivered callbacks (and their attempts) past CALLBACK_RETENTION_DAYS; returns how many.

    Only delivered rows go: a dead letter waits for an operator, an open row is still owed. Deleted
    in batches, so a large outbox never holds one long transaction.
    """
    cutoff = (now or timezone.now()) - timedelta(days=settings.CALLBACK_RETENTION_DAYS)
    old = CallbackDelivery.objects.filter(status=DeliveryStatus.DELIVERED, delivered_at__lt=cutoff)
    pruned = 0
    while ids := list(old.values_list("pk", flat=True)[:batch]):
        with transaction.atomic():
            CallbackDelivery.objects.filter(pk__in=ids).delete()
        pruned += len(ids)
    return pruned
