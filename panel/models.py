"""The panel's own records: who sees which tenants, the test payload library, and the panel's permissions."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone

from tenancy.models import Tenant


class PanelAccess(models.Model):
    """Carries the permissions of the panel's actions; it has no table and no rows."""

    class Meta:
        managed = False
        default_permissions = ()
        permissions = [
            ("send_payload", "Can send payloads through the API from the panel"),
            ("replay_payload", "Can replay payloads from the test payload library"),
            ("cancel_command", "Can cancel queued commands"),
            ("resend_callback", "Can re-send callback deliveries"),
            ("use_builder", "Can use the payload builder"),
            ("view_environment", "Can view the environment page"),
            ("view_catalogue", "Can view the command catalogue"),
            ("use_kill_switch", "Can disable, close out and enable trading (kill switches)"),
        ]


class StaffScope(models.Model):
    """The tenants a staff user may see in the panel.

    Superusers see every tenant. A staff user without a scope sees no tenant's rows at all, so
    forgetting to scope someone fails closed; `all_tenants` is the explicit way to unscope.
    """

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="panel_scope")
    all_tenants = models.BooleanField(
        default=False, help_text="Sees every tenant, present and future. Leave off to scope to the tenants below."
    )
    tenants = models.ManyToManyField(Tenant, blank=True, related_name="+")
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = "staff tenant scope"

    def __str__(self) -> str:
        return f"scope of {self.user}"


class LibraryPayload(models.Model):
    """One saved request of the test payload library, replayable through the real API path."""

    class Kind(models.TextChoices):
        COMMAND = "command", "Command envelope"
        POLICY_SNAPSHOT = "policy_snapshot", "Policy snapshot envelope"
        FLAT_COMMAND = "flat_command", "Legacy flat command (PowerShell)"
        PROTECTIVE_ACTION_REPORT = "protective_action_report", "Protective action report (to Laravel)"
        SYNC_REQUEST = "sync_request", "Sync request (GET account)"

    slug = models.SlugField(max_length=100, unique=True)
    title = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    kind = models.CharField(max_length=32, choices=Kind.choices)
    body = models.JSONField(null=True, blank=True, help_text="The JSON body; empty for a GET.")
    account_login = models.BigIntegerField(
        null=True, blank=True, help_text="For a sync request: the account login the GET names."
    )
    # Empty: a shared example every panel user sees; set: that tenant's own payload.
    tenant = models.ForeignKey(Tenant, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    builtin = models.BooleanField(default=False, help_text="One of the panel's examples, created by a migration.")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-builtin", "slug"]
        verbose_name = "test payload"

    def __str__(self) -> str:
        return self.title

    def save(self, *args: Any, **kwargs: Any) -> None:
        self.updated_at = timezone.now()
        super().save(*args, **kwargs)

    @property
    def method(self) -> str:
        return "GET" if self.kind == self.Kind.SYNC_REQUEST else "POST"

    @property
    def path(self) -> str:
        """The API path the payload goes to (the outbox path for the outbound report)."""
        paths: dict[str, str] = {
            self.Kind.COMMAND: "/api/v1/mt5/commands",
            self.Kind.FLAT_COMMAND: "/api/v1/mt5/commands",
            self.Kind.POLICY_SNAPSHOT: "/api/v1/mt5/policies",
            self.Kind.PROTECTIVE_ACTION_REPORT: settings.LARAVEL_PROTECTIVE_ACTIONS_PATH,
        }
        if self.kind == self.Kind.SYNC_REQUEST:
            return f"/api/v1/mt5/accounts/{self.account_login}"
        return paths[self.kind]


class PanelSend(models.Model):
    """Every request the panel sent through the API (builder or library), by whom and what came back.

    It is the audit trail of panel-originated traffic, and what "replay with the same key" resends.
    """

    class Origin(models.TextChoices):
        BUILDER = "builder"
        LIBRARY = "library"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    origin = models.CharField(max_length=16, choices=Origin.choices)
    payload = models.ForeignKey(LibraryPayload, null=True, blank=True, on_delete=models.SET_NULL, related_name="sends")
    username = models.CharField(max_length=150)
    method = models.CharField(max_length=8)
    path = models.CharField(max_length=255)
    headers = models.JSONField(default=dict, blank=True)
    body = models.JSONField(null=True, blank=True)
    idempotency_key = models.CharField(max_length=255, blank=True)
    status = models.PositiveSmallIntegerField()
    replayed = models.BooleanField(default=False, help_text="The API answered with a stored response (same key).")
    response = models.JSONField(null=True, blank=True)
    sent_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-sent_at", "-id"]
        indexes = [
            models.Index(fields=["tenant", "-sent_at"], name="panelsend_tenant_recent"),
            models.Index(fields=["payload", "tenant", "-sent_at"], name="panelsend_payload_recent"),
        ]
        verbose_name = "panel send"

    def __str__(self) -> str:
        return f"{self.method} {self.path} by {self.username} ({self.status})"


class KillSwitchUse(models.Model):
    """Every kill switch used in the panel: who, why, on what, in which environment, and the commands it raised.

    The audit trail of the switches; the commands themselves (risk.kill_switch) carry the same who
    and why in their reason and envelope.
    """

    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="+")
    account = models.ForeignKey(
        "policies.TradingAccount", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    switch = models.CharField(max_length=32)
    reason = models.TextField()
    username = models.CharField(max_length=150)
    environment = models.CharField(max_length=64, help_text="Environment and MT5 backend when it was used.")
    commands = models.JSONField(default=list, blank=True, help_text="The command ids it raised.")
    used_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-used_at", "-id"]
        indexes = [models.Index(fields=["tenant", "-used_at"], name="killswitch_tenant_recent")]
        verbose_name = "kill switch use"

    def __str__(self) -> str:
        target = self.account or self.tenant
        return f"{self.switch} on {target} by {self.username}"
