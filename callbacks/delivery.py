"""Delivering the outbox to Laravel: claim due rows, POST them signed, retry with backoff, dead-letter.

Order: a row is not attempted while an older open row of the same account exists, so Laravel
receives an account's reports in the order they happened (a dead letter stops blocking; re-sent,
it goes ahead of the account's still-open younger rows). A row that leaves the way (delivered or
dead-lettered) lets the account's next row go in the same pass.

Concurrency: rows are claimed in a short transaction (``FOR UPDATE SKIP LOCKED`` on PostgreSQL;
SQLite's IMMEDIATE transactions serialise claimers) and marked ``delivering`` with a lease in
``next_attempt_at``; the POST happens outside any transaction. A process that dies mid-POST leaves
the row to be reclaimed when the lease ends. Delivery is at-least-once: Laravel de-duplicates on
``meta.idempotency_key`` / ``X-Idempotency-Key``, which never change.

Permanent refusals (PROTOCOL.md §9): a 4xx other than 408, 409, 425 and 429 can never succeed, so
it dead-letters that one row at once (visible, with its attempts, and re-sendable in the panel)
and the account's next row goes on: no answer of Laravel's holds back later protective reports.

Retries: every other non-2xx (5xx, 408, 409, 425, 429, and the rest), connection error and
timeout is retried, in order per account. The wait is exponential with
"equal jitter" — uniformly between half and all of ``min(cap, base * 2**(n-1))`` — rather than full
jitter: full jitter may retry a Laravel that just failed within milliseconds, and the herd it
spreads is small here (a few delivery processes), while equal jitter keeps a floor that doubles.
A ``Retry-After`` (delta-seconds or HTTP-date) lengthens the wait to at least what it asks, but
never beyond ``RETRY_AFTER_CAP_FACTOR * CALLBACK_BACKOFF_MAX_SECONDS`` (1 h by default), so a
bogus header cannot park an account's reports for days. A failure at or after
``CALLBACK_RETRY_HOURS`` from the window's first attempt dead-letters the row.

``now`` moves only the scheduler's clock (due times, the retry window); ``meta.sent_at_utc`` and
``webhook-timestamp`` are always the wall clock, because they are about the request itself.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

import httpx
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, close_old_connections, transaction
from django.db.models import Exists, F, OuterRef, QuerySet
from django.utils import timezone

from alerts.models import Alert
from alerts.services import alert_raise
from bridgeproject import context
from bridgeproject.jsonutil import utc_iso
from callbacks import signing
from callbacks.models import OPEN_STATUSES, CallbackAttempt, CallbackDelivery, DeliveryStatus

logger = logging.getLogger("bridge.callbacks")

USER_AGENT = "mt5-bridge-callbacks/1"
RESPONSE_SNIPPET_BYTES = 2048
ERROR_MAX_CHARS = 1000
RETRY_AFTER_CAP_FACTOR = 4
# A row's lease, restarted as its POST begins: longer than a POST normally takes (httpx's timeout
# applies per phase: connect, write, read), short enough that a crash delays the row little. A POST
# that outlives it may be repeated by another process: at-least-once, which Laravel de-duplicates.
LEASE_MARGIN_SECONDS = 30.0
# 4xx answers that may succeed later (timeout, conflict, too early, too many requests): retried.
RETRYABLE_CLIENT_ERRORS = frozenset({408, 409, 425, 429})


def is_permanent_refusal(status_code: int | None) -> bool:
    """Whether Laravel's answer can never succeed on a retry: a 4xx other than 408, 409, 425, 429."""
    return status_code is not None and 400 <= status_code < 500 and status_code not in RETRYABLE_CLIENT_ERRORS


def check_webhook_secret() -> None:
    """Refuse a LARAVEL_WEBHOOK_SECRET that Standard Webhooks libraries could not read (ImproperlyConfigured).

    Called as a delivery process starts, so a bad secret stops it at once with a message that names
    the setting (and never shows the value), instead of failing every POST.
    """
    secret = settings.LARAVEL_WEBHOOK_SECRET
    if not secret:
        return
    try:
        signing.secret_key(secret)
    except ValueError as exc:
        raise ImproperlyConfigured(f"LARAVEL_WEBHOOK_SECRET: {exc}") from None


def backoff_seconds(attempt: int, *, rng: random.Random | None = None) -> float:
    """The wait after failed attempt number `attempt` (1-based): exponential, equal jitter, capped."""
    base = float(settings.CALLBACK_BACKOFF_BASE_SECONDS)
    cap = float(settings.CALLBACK_BACKOFF_MAX_SECONDS)
    ceiling = min(cap, base * 2.0 ** min(max(attempt - 1, 0), 64))
    return ceiling / 2 + (rng or random).uniform(0, ceiling / 2)


def retry_after_seconds(value: str | None) -> float | None:
    """A `Retry-After` header as seconds from now (RFC 9110: delta-seconds or HTTP-date); None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)


def retry_delay_seconds(*, attempt: int, retry_after: float | None) -> float:
    """How long to wait before the next attempt: the backoff, stretched to Laravel's Retry-After within the cap."""
    delay = backoff_seconds(attempt)
    if retry_after is not None:
        delay = max(delay, min(retry_after, RETRY_AFTER_CAP_FACTOR * float(settings.CALLBACK_BACKOFF_MAX_SECONDS)))
    return delay


def lease_seconds() -> float:
    return 3 * float(settings.CALLBACK_TIMEOUT_SECONDS) + LEASE_MARGIN_SECONDS


def make_client() -> httpx.Client:
    """An HTTP client for Laravel; redirects are not followed (they would drop or leak the bearer token)."""
    return httpx.Client(
        timeout=httpx.Timeout(float(settings.CALLBACK_TIMEOUT_SECONDS)),
        follow_redirects=False,
        headers={"User-Agent": USER_AGENT},
    )


def due_queryset(*, now: datetime) -> QuerySet[CallbackDelivery]:
    """Open rows due by `now` whose account has no older open row, oldest due first."""
    older_open = CallbackDelivery.objects.filter(
        account_id=OuterRef("account_id"), id__lt=OuterRef("id"), status__in=OPEN_STATUSES
    )
    return (
        CallbackDelivery.objects.filter(status__in=OPEN_STATUSES, next_attempt_at__lte=now)
        .exclude(Exists(older_open))
        .order_by("next_attempt_at", "id")
    )


def claim_due(*, limit: int, now: datetime) -> list[CallbackDelivery]:
    """Take up to `limit` due rows for this process: each becomes `delivering` under a lease, one attempt more."""
    with transaction.atomic():
        rows = list(
            due_queryset(now=now)
            .select_related("tenant", "account")
            # Rows another process is claiming are skipped, not waited for; SQLite ignores this.
            .select_for_update(skip_locked=True, of=("self",))[:limit]
        )
        if not rows:
            return []
        lease_until = now + timedelta(seconds=lease_seconds())
        CallbackDelivery.objects.filter(pk__in=[row.pk for row in rows]).update(
            status=DeliveryStatus.DELIVERING, attempts=F("attempts") + 1, next_attempt_at=lease_until
        )
    for row in rows:
        row.status = DeliveryStatus.DELIVERING
        row.attempts += 1
        row.next_attempt_at = lease_until
    return rows


def renew(*, delivery: CallbackDelivery, now: datetime) -> bool:
    """Restart the lease as the POST begins; False if the row was taken over while it waited its turn.

    A batch is posted one row at a time, so a row late in a slow batch can outlive the lease it was
    claimed with; this keeps the lease counting from its own POST, and never posts a row that
    another process has reclaimed meanwhile.
    """
    lease_until = now + timedelta(seconds=lease_seconds())
    renewed = CallbackDelivery.objects.filter(
        pk=delivery.pk, status=DeliveryStatus.DELIVERING, attempts=delivery.attempts
    ).update(next_attempt_at=lease_until)
    if renewed:
        delivery.next_attempt_at = lease_until
    return bool(renewed)


def release(*, delivery: CallbackDelivery, now: datetime) -> None:
    """Give back a claimed row that was not attempted (the process is stopping): due again at once."""
    CallbackDelivery.objects.filter(
        pk=delivery.pk, status=DeliveryStatus.DELIVERING, attempts=delivery.attempts
    ).update(status=DeliveryStatus.PENDING, attempts=F("attempts") - 1, next_attempt_at=now)


@dataclass(frozen=True)
class Response:
    """What one POST came back with (status None: no response at all)."""

    status_code: int | None
    error: str
    snippet: str
    retry_after: float | None
    duration_ms: int

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def request_of(delivery: CallbackDelivery) -> tuple[bytes, dict[str, str]]:
    """The exact body bytes (with a fresh sent_at_utc) and the headers, signature included, for one attempt."""
    envelope = {**delivery.envelope, "meta": {**delivery.envelope["meta"], "sent_at_utc": utc_iso(timezone.now())}}
    body = json.dumps(envelope, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    headers = {
        "Authorization": f"Bearer {settings.LARAVEL_INTERNAL_TOKEN}",
        "Content-Type": "application/json",
        "Accept": "application/json",
        "X-Correlation-ID": delivery.correlation_id,
        "X-Idempotency-Key": delivery.idempotency_key,
        "X-Protocol-Version": "1",
    }
    secret = settings.LARAVEL_WEBHOOK_SECRET
    if secret:
        headers.update(signing.signature_headers(secret=secret, msg_id=str(delivery.request_id), body=body))
    return body, headers


def post(delivery: CallbackDelivery, *, client: httpx.Client) -> Response:
    """POST one delivery; never raises, so one bad row cannot strand the rest of the batch in `delivering`."""
    url = f"{settings.LARAVEL_API_URL.rstrip('/')}{delivery.path}"
    started = time.perf_counter()
    try:
        body, headers = request_of(delivery)
        response = client.post(url, content=body, headers=headers)
    except httpx.HTTPError as exc:
        # httpx's messages carry the URL at most, never the request headers (token, signature).
        return Response(None, _error_text(exc), "", None, _ms_since(started))
    except Exception as exc:  # a bad URL or setting: retried like an outage, and logged with its trace
        logger.exception("callback POST failed unexpectedly")
        return Response(None, _error_text(exc), "", None, _ms_since(started))
    snippet = response.content[:RESPONSE_SNIPPET_BYTES].decode("utf-8", "replace")
    error = "" if response.is_success else f"HTTP {response.status_code}"
    retry_after = retry_after_seconds(response.headers.get("Retry-After"))
    return Response(response.status_code, error, snippet, retry_after, _ms_since(started))


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:ERROR_MAX_CHARS]


def _ms_since(started: float) -> int:
    return max(int((time.perf_counter() - started) * 1000), 0)


def record(*, delivery: CallbackDelivery, response: Response, at: datetime) -> CallbackAttempt.Outcome:
    """Write the attempt and move the row on: delivered, scheduled again, or dead-lettered."""
    window_start = delivery.window_started_at or at
    retry_after: float | None = None
    next_at: datetime | None = None
    fields: dict[str, object] = {
        "last_attempt_at": at,
        "first_attempt_at": delivery.first_attempt_at or at,
        "window_started_at": window_start,
        "last_status_code": response.status_code,
        "last_error": response.error,
    }
    if response.ok:
        outcome = CallbackAttempt.Outcome.DELIVERED
        fields.update(status=DeliveryStatus.DELIVERED, delivered_at=at, next_attempt_at=None)
    elif is_permanent_refusal(response.status_code) or at - window_start >= timedelta(
        hours=float(settings.CALLBACK_RETRY_HOURS)
    ):
        outcome = CallbackAttempt.Outcome.DEAD
        fields.update(status=DeliveryStatus.DEAD, dead_at=at, next_attempt_at=None)
    else:
        outcome = CallbackAttempt.Outcome.RETRY
        retry_after = response.retry_after
        next_at = at + timedelta(seconds=retry_delay_seconds(attempt=delivery.attempts, retry_after=retry_after))
        fields.update(status=DeliveryStatus.PENDING, next_attempt_at=next_at)
    with transaction.atomic():
        # Fenced on the attempt number: if our lease ran out and another process took the row over,
        # its bookkeeping wins and ours is only logged.
        updated = CallbackDelivery.objects.filter(
            pk=delivery.pk, status=DeliveryStatus.DELIVERING, attempts=delivery.attempts
        ).update(**fields)
        CallbackAttempt.objects.create(
            delivery=delivery,
            number=delivery.attempts,
            at=at,
            status_code=response.status_code,
            error=response.error,
            duration_ms=response.duration_ms,
            response_snippet=response.snippet,
            retry_after_seconds=response.retry_after,
            outcome=outcome,
            next_attempt_at=next_at,
        )
    if not updated:
        logger.warning("callback lease was lost before the attempt was recorded", extra={"callback_id": delivery.pk})
    for name, value in fields.items():
        setattr(delivery, name, value)
    return outcome


def attempt(
    *, delivery: CallbackDelivery, client: httpx.Client, now: datetime | None = None
) -> CallbackAttempt.Outcome:
    """One attempt at one claimed row, logged under its correlation id, tenant and account."""
    with context.scope(
        correlation_id=delivery.correlation_id,
        tenant=delivery.tenant.tenant_id,
        account=delivery.account.login,
        idempotency_key=delivery.idempotency_key,
    ):
        at = now or timezone.now()
        response = post(delivery, client=client)
        outcome = record(delivery=delivery, response=response, at=at)
        extra = {
            "callback_id": delivery.pk,
            "request_type": delivery.request_type,
            "attempt": delivery.attempts,
            "status_code": response.status_code,
            "duration_ms": response.duration_ms,
        }
        if outcome == CallbackAttempt.Outcome.DELIVERED:
            logger.info("callback delivered", extra=extra)
        elif outcome == CallbackAttempt.Outcome.RETRY:
            logger.warning(
                "callback failed, will retry",
                extra={**extra, "error": response.error, "next_attempt_at": delivery.next_attempt_at},
            )
        elif is_permanent_refusal(response.status_code):
            logger.error(
                "callback dead-lettered: Laravel refused it with HTTP %s, which no retry can change",
                response.status_code,
                extra={**extra, "error": response.error},
            )
        else:
            logger.error("callback dead-lettered after its retry window", extra={**extra, "error": response.error})
        if outcome == CallbackAttempt.Outcome.DEAD:
            alert_raise(
                kind=Alert.Kind.CALLBACK_DEAD,
                subject=f"callback:{delivery.pk}",
                title=f"Callback {delivery.request_type} for account {delivery.account.login} dead-lettered",
                body=(
                    f"Laravel answered {response.status_code or response.error}. The callback is kept and can be "
                    f"re-sent from the panel (Callbacks, id {delivery.pk}); later callbacks are delivered."
                ),
                tenant_id=delivery.tenant.tenant_id,
            )
        return outcome


def deliver_due(
    *,
    limit: int = 50,
    now: datetime | None = None,
    client: httpx.Client | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Attempt up to `limit` due callbacks; returns how many were attempted (0: nothing was due).

    Rows are claimed again after each batch, on the clock the pass began with, so a row that an
    older row of its account held back goes in the same pass once that row is delivered or
    dead-lettered; a row scheduled for a retry is not due again within the pass.
    Nothing is claimed while LARAVEL_API_URL is empty: rows wait, and `callbacks_health` says so.
    When `stop` is set mid-batch, the rows not yet attempted are released for the next process.
    """
    if not settings.LARAVEL_API_URL:
        return 0
    clock = now or timezone.now()
    own_client = client is None
    http: httpx.Client | None = client
    attempted = 0
    try:
        while attempted < limit:
            claimed = claim_due(limit=limit - attempted, now=clock)
            if not claimed:
                break
            if http is None:
                http = make_client()
            attempted_before = attempted
            for delivery in claimed:
                if stop is not None and stop.is_set():
                    release(delivery=delivery, now=now or timezone.now())
                    continue
                if not renew(delivery=delivery, now=now or timezone.now()):
                    logger.info("callback taken over by another process; skipped", extra={"callback_id": delivery.pk})
                    continue
                attempt(delivery=delivery, client=http, now=now)
                attempted += 1
            if attempted == attempted_before or (stop is not None and stop.is_set()):
                break
    finally:
        if own_client and http is not None:
            http.close()
    return attempted


def deliver_forever(*, stop: threading.Event, poll_ms: int, limit: int = 50) -> None:
    """The delivery loop: drain what is due, sleep `poll_ms` when idle, return soon after `stop` is set."""
    idle_s = max(poll_ms, 1) / 1000
    check_webhook_secret()
    if not settings.LARAVEL_API_URL:
        logger.warning("LARAVEL_API_URL is not set: callbacks stay pending until it is")
    with make_client() as client:
        while not stop.is_set():
            # Long-lived process: drop connections past CONN_MAX_AGE or broken by a database restart.
            close_old_connections()
            try:
                attempted = deliver_due(limit=limit, client=client, stop=stop)
            except DatabaseError:
                logger.exception("callback delivery pass failed; trying again")
                stop.wait(max(idle_s, 1.0))
                continue
            if attempted == 0:
                stop.wait(idle_s)
