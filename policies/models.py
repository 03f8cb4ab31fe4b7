from __future__ import annotations

import uuid

from django.db import models
from django.db.models.functions import Lower, Trim
from django.utils import timezone

from tenancy.models import Tenant


def server_key(name: str) -> str:
    """How server names compare (PROTOCOL §9 "Identity of accounts"): trimmed, case-insensitively."""
    return name.strip().lower()


def on_server(accounts: models.QuerySet[TradingAccount], server: str) -> models.QuerySet[TradingAccount]:
    """`accounts` on the server named `server`, however its name is spaced or capitalised."""
    return accounts.alias(server_key=Lower(Trim("server"))).filter(server_key=server_key(server))


class TradingAccount(models.Model):
    """An MT5 account (server + login), owned by the tenant whose first policy snapshot registered it.

    `server` keeps the spelling of that first snapshot (trimmed); names compare trimmed and
    case-insensitively, so `broker-server ` is the same account as `Broker-Server`."""

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
    # The bridge has disabled this account's trading on the MT5 server itself (the Manager API's
    # USER_RIGHT_TRADE_DISABLED), for a command or a breach; it clears the right when neither
    # holds any more, and never clears one it did not set.
    server_trade_disabled = models.BooleanField(default=False)
    trading_disabled_at = models.DateTimeField(null=True, blank=True, help_text="When trading was last disabled.")
    # The last MT5 snapshot the bridge saw, served (with its age) when the terminal is unreachable.
    last_snapshot = models.JSONField(null=True, blank=True)
    last_snapshot_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(Lower(Trim("server")), "login", name="account_server_key_login_unique"),
        ]
        indexes = [models.Index(fields=["tenant", "login"])]
        ordering = ["login"]

    def __str__(self) -> str:
        return f"{self.login}@{self.server}"

    @property
    def money_digits(self) -> int:
        """The account currency's digits, from the last MT5 snapshot seen (2 before any)."""
        digits = (self.last_snapshot or {}).get("currency_digits")
        return digits if isinstance(digits, int) and 0 <= digits <= 8 else 2

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
        indexes = [
            # The panel's searches and newest-first lists (named panel_*: the panel's migrations made them first).
            models.Index(fields=["-received_at"], name="panel_policy_recent"),
        ]
        ordering = ["-received_at"]
        get_latest_by = "policy_version"

    def __str__(self) -> str:
        return f"{self.account} v{self.policy_version}"


class AccountRisk(models.Model):
    """The durable risk state of one account (RISK_RULES.md): it survives restarts and monitors."""

    account = models.OneToOneField(TradingAccount, on_delete=models.CASCADE, related_name="risk")
    policy_version = models.PositiveIntegerField()
    initial_balance = models.DecimalField(max_digits=20, decimal_places=8)
    high_water_mark = models.DecimalField(max_digits=20, decimal_places=8)
    total_floor = models.DecimalField(max_digits=20, decimal_places=8)
    daily_reference = models.DecimalField(max_digits=20, decimal_places=8)
    daily_reference_date = models.DateField()
    daily_reference_source = models.CharField(max_length=16, default="laravel")
    violation_count = models.PositiveIntegerField(default=0)
    breached_tickets = models.JSONField(default=list, blank=True)
    hard_breached = models.BooleanField(default=False)
    trading_disabled_until = models.DateTimeField(null=True, blank=True)
    last_trading_day = models.DateField(
        null=True, blank=True, help_text="The trading day last evaluated (an eod_balance high-water mark's clock)."
    )
    # The figures of the last evaluation, for the API and the panel.
    measured = models.DecimalField(max_digits=20, decimal_places=8, null=True, blank=True)
    balance = models.DecimalField(max_digits=20, decimal_places=8, null=True, blank=True)
    equity = models.DecimalField(max_digits=20, decimal_places=8, null=True, blank=True)
    daily_floor = models.DecimalField(max_digits=20, decimal_places=8, null=True, blank=True)
    trading_block = models.CharField(max_length=32, blank=True)
    snapshot_at = models.DateTimeField(null=True, blank=True, help_text="Time of the MT5 snapshot last evaluated.")
    evaluated_at = models.DateTimeField(null=True, blank=True)
    # Set when a command on the account finished: the monitor looks again within milliseconds.
    evaluate_requested_at = models.DateTimeField(null=True, blank=True, db_index=True)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = "account risk state"

    def __str__(self) -> str:
        return f"risk of {self.account}"


class RiskSample(models.Model):
    """Equity and balance over time with both floors, for the account page's chart."""

    account = models.ForeignKey(TradingAccount, on_delete=models.CASCADE, related_name="risk_samples")
    at = models.DateTimeField()
    balance = models.DecimalField(max_digits=20, decimal_places=2)
    equity = models.DecimalField(max_digits=20, decimal_places=2)
    # Null: the rule is off in the policy of the time (RISK_RULES v2: a null percent).
    daily_floor = models.DecimalField(max_digits=20, decimal_places=2, null=True, blank=True)
    total_floor = models.DecimalField(max_digits=20, decimal_places=2, null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["account", "-at"]),
            # The panel's searches and newest-first lists (named panel_*: the panel's migrations made them first).
            models.Index(fields=["-at"], name="panel_sample_recent"),
        ]
        ordering = ["-at"]


class ProtectiveAction(models.Model):
    """One breach and what the bridge did about it: exactly one per (account, rule, scope, version).

    An action has a goal (RISK_RULES.md "Enforcement that holds") and stays open until the goal
    holds on MT5: its fast-lane commands are attempts, and a failed or expired attempt is
    followed by another under the same action.
    """

    class Status(models.TextChoices):
        PENDING = "pending"
        SUCCESS = "success"
        FAILED = "failed"
        PARTIAL = "partial"
        SKIPPED = "skipped"

    class Goal(models.TextChoices):
        POSITION_CLOSED = "position_closed"
        POSITION_REDUCED = "position_reduced", "position reduced (volume within the limit)"
        ORDER_CANCELLED = "order_cancelled"
        ACCOUNT_FLAT = "account_flat", "account flat (no positions, no pending orders)"
        TRADING_DISABLED = "trading_disabled"
        NONE = "none", "none (recorded only)"

    # Stable across databases and bridges: Laravel knows the action by it (PROTOCOL.md §9).
    action_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    goal = models.CharField(max_length=20, choices=Goal.choices, default=Goal.NONE)
    goal_met_at = models.DateTimeField(null=True, blank=True, help_text="When MT5 showed the goal holding.")
    attempt_count = models.PositiveIntegerField(default=0, help_text="Attempts raised (each one or two commands).")
    attempt_commands = models.JSONField(default=list, blank=True, help_text="The latest attempt's command ids (pk).")
    attempt_ended_at = models.DateTimeField(null=True, blank=True, help_text="When the latest attempt finished.")
    next_attempt_at = models.DateTimeField(null=True, blank=True, help_text="No new attempt before this.")
    report_sequence = models.PositiveIntegerField(default=0, help_text="Reports written to the outbox so far.")
    reported_status = models.CharField(max_length=16, blank=True, help_text="The status of the latest report.")
    alerted_at = models.DateTimeField(null=True, blank=True, help_text="When operators were told the goal is late.")

    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="protective_actions")
    account = models.ForeignKey(TradingAccount, on_delete=models.CASCADE, related_name="protective_actions")
    rule_key = models.CharField(max_length=32, db_index=True)
    scope = models.CharField(
        max_length=64, help_text="ticket:<n>, order:<n>, day:<date>, week:<yyyy-Www>, version:<n> or lifetime"
    )
    policy_version = models.PositiveIntegerField()
    action = models.CharField(
        max_length=16, help_text="close_position, reduce_position, close_all, cancel_order, none or report"
    )
    enabled = models.BooleanField(help_text="The enforcement flag: off means recorded and reported as skipped.")
    hard = models.BooleanField(default=False)
    ticket = models.BigIntegerField(null=True, blank=True)
    symbol = models.CharField(max_length=32, blank=True)
    volume = models.DecimalField(max_digits=20, decimal_places=8, null=True, blank=True)
    floating_pnl = models.DecimalField(max_digits=20, decimal_places=8, null=True, blank=True)
    closed_pnl = models.DecimalField(max_digits=20, decimal_places=8, default=0)
    equity = models.DecimalField(max_digits=20, decimal_places=8)
    balance = models.DecimalField(max_digits=20, decimal_places=8)
    threshold_used = models.DecimalField(max_digits=20, decimal_places=8)
    floor_or_limit = models.DecimalField(max_digits=20, decimal_places=8)
    measured = models.DecimalField(max_digits=20, decimal_places=8)
    violation_count = models.PositiveIntegerField(null=True, blank=True)
    detection_timestamp = models.DateTimeField(help_text="Time of the MT5 snapshot that showed the breach.")
    execution_timestamp = models.DateTimeField(null=True, blank=True, help_text="When MT5 confirmed the action.")
    execution_status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    mt5_response = models.TextField(blank=True)
    error_message = models.TextField(blank=True)
    positions = models.JSONField(default=list, blank=True, help_text="One result per position (account-wide actions).")
    explanation = models.JSONField(
        default=dict,
        blank=True,
        help_text="measured, measured_kind, floor_or_limit, reference, high_water_mark, rule_params (RISK_RULES v2).",
    )
    command = models.ForeignKey(
        "commands.Command", null=True, blank=True, on_delete=models.SET_NULL, related_name="protective_actions"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["account", "rule_key", "scope", "policy_version"], name="protective_action_once"
            )
        ]
        indexes = [
            models.Index(fields=["account", "-created_at"]),
            models.Index(fields=["tenant", "-created_at"]),
            models.Index(fields=["execution_status"]),
            # The monitor's question every cycle: which of these accounts have a goal still open?
            models.Index(
                fields=["account"],
                name="protective_action_pursued",
                condition=models.Q(goal_met_at__isnull=True) & ~models.Q(goal="none"),
            ),
            # The panel's searches and newest-first lists (named panel_*: the panel's migrations made them first).
            models.Index(fields=["-created_at"], name="panel_pa_recent"),
            models.Index(fields=["rule_key", "-created_at"], name="panel_pa_rule_recent"),
        ]
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.rule_key} on {self.account} ({self.scope}, v{self.policy_version})"


class SentAheadNote(models.Model):
    """A protective close the event monitor is about to send before the breach's action is
    recorded (docs/manager-api.md "Acting before recording"), written in one statement just
    before its ``DealerSend``. The engine deletes it when it records the action under
    ``action_id``; one left behind (the monitor died between the close and its record, or the
    engine judged otherwise) is turned into the action by the sweeper
    (``risk.protection.sent_ahead_recover``), so no protective close goes unrecorded."""

    action_id = models.UUIDField(unique=True, help_text="The id chosen for the action; its closes carry its tag.")
    account = models.ForeignKey(TradingAccount, on_delete=models.CASCADE, related_name="sent_ahead_notes")
    rule_key = models.CharField(max_length=32)
    scope = models.CharField(max_length=64)
    policy_version = models.PositiveIntegerField()
    figures = models.JSONField(
        default=dict, help_text="The breach's figures as the action records them (exact decimal strings)."
    )
    tag = models.CharField(max_length=32, help_text="The MT5 tag the closes carry.")
    tickets = models.JSONField(default=list, blank=True, help_text="The positions closed ahead.")
    sent_at = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return f"{self.rule_key} on account {self.account_id} ({self.scope}, v{self.policy_version}) sent ahead"


class MonitorHeartbeat(models.Model):
    """A live risk monitor; the live ones split the accounts between them by rendezvous hashing."""

    monitor_id = models.CharField(max_length=64, unique=True)
    hostname = models.CharField(max_length=128, blank=True)
    pid = models.PositiveIntegerField(default=0)
    started_at = models.DateTimeField(default=timezone.now)
    heartbeat_at = models.DateTimeField(default=timezone.now, db_index=True)
    accounts_watched = models.PositiveIntegerField(default=0)
    last_cycle_ms = models.FloatField(default=0)

    def __str__(self) -> str:
        return self.monitor_id
