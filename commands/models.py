from __future__ import annotations

from typing import Any, cast

from django.contrib.postgres.indexes import OpClass
from django.db import DatabaseError, connection, models
from django.db.models.functions import Cast, Upper
from django.utils import timezone

from bridgeproject.dbutil import prepared_cursor
from commands.lanes import Lane
from commands.states import TERMINAL, State, check_transition
from policies.models import TradingAccount
from tenancy.models import Tenant


def prefix_index(column: str, name: str) -> models.Index:
    """An index for a case-insensitive prefix search on a text column: `col__istartswith` is
    UPPER(col::text) LIKE UPPER('abc%') on PostgreSQL, which this serves (text_pattern_ops: a LIKE
    prefix whatever the collation). commands 0007 creates it on PostgreSQL, a plain UPPER(col) elsewhere."""
    return models.Index(OpClass(Upper(Cast(column, models.TextField())), name="text_pattern_ops"), name=name)


class CommandType(models.TextChoices):
    OPEN_POSITION = "open_position"
    CLOSE_POSITION = "close_position"
    CLOSE_POSITIONS = "close_positions"
    MODIFY_POSITION = "modify_position"
    CANCEL_ORDERS = "cancel_orders"
    DISABLE_TRADING = "disable_trading"
    ENABLE_TRADING = "enable_trading"
    SYNC_ACCOUNT = "sync_account"


class Priority(models.TextChoices):
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"
    CRITICAL = "critical"


class Source(models.TextChoices):
    API = "api"
    BRIDGE = "bridge"


# PROTOCOL.md §9 "Command ids": the bridge names its own commands (protective actions, sweeps)
# with this prefix, and intake refuses it, so no id a tenant sends can ever take one of them.
BRIDGE_COMMAND_ID_PREFIX = "bridge-"


class Command(models.Model):
    """One trading command: its request, its lane, its place in the state machine and its MT5 result."""

    # No single-column indexes on the two keys: the composite indexes below lead with them, and
    # every index is one more write on the intake's hot path.
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="commands", db_index=False)
    account = models.ForeignKey(TradingAccount, on_delete=models.PROTECT, related_name="commands", db_index=False)
    command_id = models.CharField(max_length=255)
    command_type = models.CharField(max_length=32, choices=CommandType.choices)
    priority = models.CharField(max_length=16, choices=Priority.choices, default=Priority.NORMAL)
    lane = models.CharField(max_length=8, choices=Lane.choices, default=Lane.NORMAL)
    state = models.CharField(max_length=24, choices=State.choices, default=State.RECEIVED)
    source = models.CharField(max_length=8, choices=Source.choices, default=Source.API)
    reason = models.CharField(max_length=255, blank=True)
    payload = models.JSONField(help_text="The command payload as validated.")
    envelope = models.JSONField(help_text="The body as received.")
    correlation_id = models.CharField(max_length=128, blank=True)
    idempotency_key = models.CharField(max_length=255, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    result = models.JSONField(null=True, blank=True, help_text="The normalised MT5 result.")
    error_code = models.CharField(max_length=64, blank=True)
    error_message = models.TextField(blank=True)
    received_at = models.DateTimeField(default=timezone.now)
    queued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)
    # A fast command's lease while it executes: its worker renews it every
    # FAST_LANE_LEASE_RENEW_SECONDS; once it lapses the sweeper sends the command back to its lane.
    # Empty on the normal lane, whose lease is COMMAND_EXECUTING_LEASE_SECONDS after `updated_at`.
    lease_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "command_id"], name="command_tenant_command_id_unique")
        ]
        indexes = [
            models.Index(fields=["tenant", "-received_at", "-id"], name="command_tenant_recent"),
            models.Index(fields=["account", "-received_at"], name="command_account_recent"),
            models.Index(fields=["state", "lane", "updated_at"], name="command_state_lane"),
            # The panel's searches and newest-first lists (named panel_*: the panel's migrations made them first).
            # Prefix and case-insensitive: UPPER(col) LIKE UPPER('abc%') (`__istartswith`) reads these.
            prefix_index("command_id", "panel_cmd_command_id_ci"),
            prefix_index("correlation_id", "panel_cmd_correlation_ci"),
            prefix_index("idempotency_key", "panel_cmd_idem_key_ci"),
            models.Index(fields=["-received_at", "-id"], name="panel_cmd_recent"),
            models.Index(fields=["state", "-received_at"], name="panel_cmd_state_recent"),
        ]
        ordering = ["-received_at", "-id"]

    # Not a column: execution.runner.command_claim sets it on the instance it hands a worker.
    claimed_before: bool

    def __str__(self) -> str:
        return f"{self.command_id} ({self.command_type}, {self.state})"

    def transition(self, target: str, *, note: str = "", save: bool = True, **fields: Any) -> None:
        """Move to `target` if the state machine allows it, and record the change on the timeline."""
        check_transition(self.state, target)
        now = timezone.now()
        previous = self.state
        self.state = target
        self.updated_at = now
        changed = ["state", "updated_at", *fields]
        if target == State.QUEUED:
            self.queued_at = now
            changed.append("queued_at")
        elif target == State.EXECUTING:
            self.started_at = now
            changed.append("started_at")
        elif target in TERMINAL:
            self.finished_at = now
            changed.append("finished_at")
        for name, value in fields.items():
            setattr(self, name, value)
        if not save:
            return
        # Only what changed: the request and its envelope are written once, at acceptance.
        if connection.vendor == "postgresql":
            _transition_statement(self, changed, previous=previous, note=note, at=now)
            return
        self.save(update_fields=changed)
        CommandEvent.objects.create(
            command=self, kind=CommandEvent.Kind.TRANSITION, from_state=previous, to_state=target, note=note, at=now
        )


class CommandEvent(models.Model):
    """The command's timeline: every state change, and every MT5 attempt with its request and result."""

    class Kind(models.TextChoices):
        TRANSITION = "transition"
        ATTEMPT = "attempt"

    command = models.ForeignKey(Command, on_delete=models.CASCADE, related_name="events", db_index=False)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    at = models.DateTimeField(default=timezone.now)
    from_state = models.CharField(max_length=24, blank=True)
    to_state = models.CharField(max_length=24, blank=True)
    attempt = models.PositiveIntegerField(null=True, blank=True)
    note = models.TextField(blank=True)
    request = models.JSONField(null=True, blank=True)
    response = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ["at", "id"]
        indexes = [
            models.Index(fields=["command", "at"]),
            # The panel's searches and newest-first lists (named panel_*: the panel's migrations made them first).
            models.Index(fields=["-at", "-id"], name="panel_event_recent"),
        ]


class IdempotencyRecord(models.Model):
    """One idempotency key of one tenant: the fingerprint of its request and the response it got."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="idempotency_records", db_index=False)
    key = models.CharField(max_length=255)
    fingerprint = models.CharField(max_length=64)
    method = models.CharField(max_length=8)
    path = models.CharField(max_length=255)
    request_type = models.CharField(max_length=32, blank=True)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True, help_text="Empty while in progress.")
    response_body = models.JSONField(null=True, blank=True)
    correlation_id = models.CharField(max_length=128, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    completed_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "key"], name="idempotency_tenant_key_unique")]
        indexes = [
            # The panel's searches and newest-first lists (named panel_*: the panel's migrations made them first).
            prefix_index("key", "panel_idem_key_ci"),
            prefix_index("correlation_id", "panel_idem_correlation_ci"),
            models.Index(fields=["-created_at"], name="panel_idem_recent"),
            models.Index(fields=["tenant", "-created_at"], name="panel_idem_tenant_recent"),
        ]
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.tenant_id}:{self.key}"


class LaneHeartbeat(models.Model):
    """A live lane worker: each django-q2 worker process says so every few seconds (health reads it)."""

    lane = models.CharField(max_length=16, db_index=True)
    host = models.CharField(max_length=128)
    pid = models.PositiveIntegerField()
    seen_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["host", "pid"], name="lane_heartbeat_process_unique")]

    def __str__(self) -> str:
        return f"{self.lane} worker {self.pid}@{self.host}"


def _transition_statement(command: Command, changed: list[str], *, previous: str, note: str, at: Any) -> None:
    """`save(update_fields=changed)` and the transition's timeline entry as one PostgreSQL statement
    (the execution lanes' hot path)."""
    from commands import sql  # the statements name this module's tables

    # update_fields names concrete columns of Command, never a relation's reverse side.
    fields = cast("list[models.Field]", [Command._meta.get_field(name) for name in changed])
    statement = sql.transition(tuple(changed))
    values = [field.get_db_prep_save(getattr(command, field.attname), connection) for field in fields]
    event = [CommandEvent.Kind.TRANSITION.value, at, previous, command.state, note]
    with prepared_cursor() as cursor:
        cursor.execute(statement, [*values, command.pk, *event])
        if cursor.fetchone() is None:
            raise DatabaseError("Save with update_fields did not affect any rows.")
