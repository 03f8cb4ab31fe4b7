from __future__ import annotations

from django.db import models
from django.utils import timezone

from tenancy.models import Tenant


class TradingAccount(models.Model):
    """An MT5 account (server + login), owned by the tenant whose first policy snapshot registered it."""

    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="accounts")
    server = models.CharField(max_length=128)
    login = models.BigIntegerField(db_index=True)
    trading_account_id = models.CharField(max_length=64, blank=True, help_text="Laravel's id for the account.")
    platform = models.CharField(max_length=16, default="MT5")
    current_policy = models.ForeignKey(
        "PolicySnapshot", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # The bridge-enforced switch of `disable_trading` / `enable_trading` commands.
    trading_enabled = models.BooleanField(default=True)
    trading_disabled_reason = models.CharField(max_length=200, blank=True)
    # The last MT5 snapshot the bridge saw, served (with its age) when the terminal is unreachable.
    last_snapshot = models.JSONField(null=True, blank=True)
    last_snapshot_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["server", "login"], name="account_server_login_unique")]
        indexes = [models.Index(fields=["tenant", "login"])]
        ordering = ["login"]

    def __str__(self) -> str:
        return f"{self.login}@{self.server}"

    @property
    def account_status(self) -> str:
        """The current policy's account_status ('active' when no policy is held yet)."""
        if self.current_policy is None:
            return "active"
        return str(self.current_policy.payload.get("account_status", "active"))


class PolicySnapshot(models.Model):
    """Every policy snapshot Laravel sent, stored whole; history is kept."""

    account = models.ForeignKey(TradingAccount, on_delete=models.CASCADE, related_name="policies")
    policy_version = models.PositiveIntegerField()
    payload = models.JSONField(help_text="The snapshot's payload, timestamps normalised to UTC.")
    fingerprint = models.CharField(max_length=64)
    envelope = models.JSONField(help_text="The envelope as received.")
    correlation_id = models.CharField(max_length=128, blank=True)
    idempotency_key = models.CharField(max_length=255, blank=True)
    received_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["account", "policy_version"], name="policy_account_version_unique")
        ]
        ordering = ["-received_at"]
        get_latest_by = "policy_version"

    def __str__(self) -> str:
        return f"{self.account} v{self.policy_version}"
