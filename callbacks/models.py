"""The callback outbox: one row per report owed to Laravel, written in the same transaction as its event."""

from __future__ import annotations

import uuid

from django.db import models
from django.utils import timezone

from policies.models import TradingAccount
from tenancy.models import Tenant


class RequestType(models.TextChoices):
    PROTECTIVE_ACTION_REPORT = "protective_action_report"
    COMMAND_RESULT = "command_result"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending"
    # Claimed by a delivery process; `next_attempt_at` is then the end of its lease, so a row whose
    # process died mid-POST becomes due again on its own.
    DELIVERING = "delivering"
    DELIVERED = "delivered"
    DEAD = "dead"


# Rows still owed to Laravel: they are delivered in order per account and count as pending in health.
OPEN_STATUSES = (DeliveryStatus.PENDING, DeliveryStatus.DELIVERING)


class CallbackDelivery(models.Model):
    """One callback owed to Laravel: the envelope built at enqueue, and where its delivery stands."""

    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="callback_deliveries")
    account = models.ForeignKey(TradingAccount, on_delete=models.PROTECT, related_name="callback_deliveries")
    request_type = models.CharField(max_length=32, choices=RequestType.choices)
    path = models.CharField(max_length=255, help_text="Appended to LARAVEL_API_URL; fixed at enqueue.")
    envelope = models.JSONField(help_text="The body sent; only meta.sent_at_utc changes between attempts.")
    # The callback's identity (PROTOCOL.md §9), minted by `callback_enqueue` as it writes the row and
    # never derived from a local number, so a rebuilt database, a restored backup or a second bridge
    # reporting to the same Laravel never reuses one; every attempt repeats both exactly.
    # meta.request_id and the Standard Webhooks `webhook-id`: one message, however many attempts.
    request_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    idempotency_key = models.CharField(
        max_length=255,
        help_text="meta.idempotency_key and X-Idempotency-Key: a UUID minted at enqueue; Laravel de-duplicates on it.",
    )
    # What makes an event this row's own, locally: a retried event (the same dedup key) finds its
    # row instead of writing a second one. Never sent to Laravel.
    dedup_key = models.CharField(
        max_length=255, help_text="The bridge's own de-duplication key of the event (e.g. command-result:<pk>)."
    )
    correlation_id = models.CharField(max_length=128)
    source_kind = models.CharField(max_length=32, blank=True, help_text="What raised it: protective_action, command.")
    source_id = models.CharField(max_length=64, blank=True)

    status = models.CharField(max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(
        null=True, blank=True, help_text="When it is due (pending) or when its lease ends (delivering)."
    )
    # The retry window (CALLBACK_RETRY_HOURS) counts from here; a re-send starts a new window.
    window_started_at = models.DateTimeField(null=True, blank=True)
    first_attempt_at = models.DateTimeField(null=True, blank=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    dead_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "dedup_key"], name="callback_tenant_dedup_unique"),
            # Kept from before dedup_key (its index was already there): minted keys are UUIDs, so
            # this only guards; rows written earlier keep their old per-tenant keys.
            models.UniqueConstraint(fields=["tenant", "idempotency_key"], name="callback_tenant_key_unique"),
        ]
        indexes = [
            # The delivery query: open rows by due time. Partial, so delivered history does not bloat it.
            models.Index(fields=["next_attempt_at"], name="callback_due", condition=models.Q(status__in=OPEN_STATUSES)),
            # "Is an older row of this account still open?" — the per-account order check.
            models.Index(
                fields=["account", "id"], name="callback_account_open", condition=models.Q(status__in=OPEN_STATUSES)
            ),
            models.Index(fields=["status", "-created_at"], name="callback_status_recent"),
            models.Index(fields=["tenant", "-created_at"], name="callback_tenant_recent"),
            models.Index(fields=["-created_at"], name="callback_recent"),
            models.Index(fields=["source_kind", "source_id"], name="callback_source"),
            # The panel's searches and newest-first lists (named panel_*: the panel's migrations made them first).
            models.Index(fields=["idempotency_key"], name="panel_cb_idem_key"),
            models.Index(fields=["correlation_id"], name="panel_cb_correlation"),
            models.Index(fields=["request_type", "-created_at"], name="panel_cb_type_recent"),
        ]
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "callback deliveries"

    def __str__(self) -> str:
        return f"{self.request_type} {self.idempotency_key} ({self.status})"

    @property
    def is_open(self) -> bool:
        """Still owed to Laravel (pending, or being delivered right now)."""
        return self.status in OPEN_STATUSES


class CallbackAttempt(models.Model):
    """One POST to Laravel and what came back, so every attempt is visible in the admin."""

    class Outcome(models.TextChoices):
        DELIVERED = "delivered"
        RETRY = "retry"
        DEAD = "dead"

    delivery = models.ForeignKey(CallbackDelivery, on_delete=models.CASCADE, related_name="attempt_log")
    number = models.PositiveIntegerField(help_text="1 for the first attempt of the delivery.")
    at = models.DateTimeField(default=timezone.now)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True, help_text="Empty when no response came.")
    error = models.TextField(blank=True, help_text="Connection error, timeout, or why the response failed.")
    duration_ms = models.PositiveIntegerField(default=0)
    response_snippet = models.TextField(blank=True, help_text="The first 2 KB of the response body.")
    retry_after_seconds = models.FloatField(null=True, blank=True, help_text="Laravel's Retry-After, as seconds.")
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    next_attempt_at = models.DateTimeField(null=True, blank=True, help_text="When the retry was scheduled.")

    class Meta:
        ordering = ["delivery", "number"]
        indexes = [
            models.Index(fields=["delivery", "number"], name="callback_attempt_order"),
            # The panel's searches and newest-first lists (named panel_*: the panel's migrations made them first).
            models.Index(fields=["-at"], name="panel_cbattempt_recent"),
        ]

    def __str__(self) -> str:
        return f"attempt {self.number} of {self.delivery_id}: {self.status_code or self.error[:40]}"
