"""An alert: something an operator must know now (an account in breach, a protective goal late, a
callback dead-lettered, a lane or a risk monitor gone), kept until acknowledged in the panel."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class Alert(models.Model):
    class Kind(models.TextChoices):
        PROTECTION_LATE = "protection_late", "protective goal not reached in time"
        CALLBACK_DEAD = "callback_dead", "callback dead-lettered"
        LANE_DOWN = "lane_down", "a lane has no live worker"
        MONITOR_DOWN = "monitor_down", "a risk monitor stopped"
        TERMINAL_UNOWNED = "terminal_unowned", "no process drives a terminal"
        TERMINAL_TRADING_OFF = "terminal_trading_off", "a terminal refuses the bridge's trades"
        TERMINAL_SWITCHED = "terminal_account_switched", "a terminal held another account after a trade"
        ACCOUNT_BREACH = "account_breach", "an account breached a drawdown or a hard limit"
        CLOSE_RECOVERED = "close_recovered", "a protective close sent ahead had no record; recovered"

    class Severity(models.TextChoices):
        CRITICAL = "critical"
        WARNING = "warning"

    kind = models.CharField(max_length=32, choices=Kind.choices)
    severity = models.CharField(max_length=16, choices=Severity.choices, default=Severity.CRITICAL)
    # What the alert is about (an action id, a callback id, a lane): one open alert per (kind, subject).
    subject = models.CharField(max_length=128)
    title = models.CharField(max_length=200)
    body = models.TextField(blank=True)
    tenant_id = models.CharField(max_length=64, blank=True, help_text="The tenant concerned, when there is one.")
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True, help_text="When ALERT_URLS accepted it.")
    send_error = models.TextField(blank=True)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["kind", "subject"], condition=models.Q(acknowledged_at__isnull=True), name="alert_open_once"
            )
        ]
        indexes = [models.Index(fields=["-created_at"], name="alert_recent")]

    def __str__(self) -> str:
        return f"{self.kind}: {self.title}"

    @property
    def is_open(self) -> bool:
        return self.acknowledged_at is None
