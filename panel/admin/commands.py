"""Commands, their timelines and idempotency records, for operators and support on a bad day."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString
from unfold.contrib.filters.admin import ChoicesDropdownFilter, RangeDateTimeFilter
from unfold.decorators import action, display

from commands.models import Command, CommandEvent, IdempotencyRecord, LaneHeartbeat
from commands.states import State, can_transition
from execution.heartbeat import ALIVE_WITHIN_SECONDS
from panel.admin.base import (
    STATE_LABELS,
    BigTableMixin,
    ReadOnlyMixin,
    ScopedAdmin,
    TenantFilter,
    admin_link,
    age,
    confirm_then,
    pretty_json,
    table_html,
)
from panel.dashboard import OUTCOMES, received_in_window
from panel.formatting import utc
from panel.services import command_cancel

SUMMARY_FIELDS = (
    "command_id",
    "tenant",
    "account_link",
    "command_type",
    "priority",
    "lane",
    "state",
    "source",
    "reason",
    "attempts",
    "error_code",
    "error_message",
)
TIMESTAMP_FIELDS = ("received_at", "queued_at", "started_at", "finished_at", "expires_at", "updated_at")
TRACE_FIELDS = ("correlation_id", "idempotency_key", "idempotency_record_link", "related_links")


def _exchange(event: CommandEvent) -> SafeString | None:
    """An attempt's MT5 request and result, folded so the timeline stays as wide as its card."""
    if event.request is None and event.response is None:
        return None
    retcode = (event.response or {}).get("retcode_name") if isinstance(event.response, dict) else None
    return format_html(
        "<details><summary>{}</summary>{}{}</details>",
        retcode or "request and result",
        pretty_json(event.request),
        pretty_json(event.response),
    )


class ReceivedWindowFilter(admin.SimpleListFilter):
    """The dashboard's window: what its "last hour" counters count is what this filter lists."""

    title = "received"
    parameter_name = "received"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]) -> list[tuple[str, str]]:
        return [("1h", "In the last hour")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Command]) -> QuerySet[Command]:
        return queryset.filter(received_in_window()) if self.value() == "1h" else queryset


class OutcomeFilter(admin.SimpleListFilter):
    """The dashboard's groups of states, each one filter value (the state filter picks one state)."""

    title = "outcome"
    parameter_name = "outcome"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]) -> list[tuple[str, str]]:
        return [(key, label) for key, (label, _) in OUTCOMES.items()]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Command]) -> QuerySet[Command]:
        outcome = OUTCOMES.get(self.value() or "")
        return queryset.filter(state__in=outcome[1]) if outcome else queryset


@admin.register(Command)
class CommandAdmin(BigTableMixin, ReadOnlyMixin, ScopedAdmin[Command]):
    list_display = (
        "command_id",
        "state_label",
        "lane_label",
        "account",
        "command_type",
        "tenant",
        "age_column",
        "attempts",
    )
    list_select_related = ("account", "tenant")
    list_filter = (
        TenantFilter,
        ReceivedWindowFilter,
        OutcomeFilter,
        ("state", ChoicesDropdownFilter),
        ("lane", ChoicesDropdownFilter),
        ("command_type", ChoicesDropdownFilter),
        ("received_at", RangeDateTimeFilter),
    )
    list_filter_submit = True
    search_fields = ("command_id__istartswith", "correlation_id__istartswith", "idempotency_key__istartswith")
    search_help_text = "Command id, correlation id or idempotency key: its beginning, in any case."
    ordering = ("-received_at", "-id")
    sortable_by = ("age_column",)
    actions = ("cancel_selected", "export_csv")
    actions_detail = ("cancel_detail",)
    export_fields = (
        "command_id",
        "tenant__tenant_id",
        "account__login",
        "account__server",
        "command_type",
        "priority",
        "lane",
        "state",
        "source",
        "attempts",
        "error_code",
        "correlation_id",
        "idempotency_key",
        "received_at",
        "finished_at",
    )
    readonly_fields = (
        *SUMMARY_FIELDS,
        *TIMESTAMP_FIELDS,
        *TRACE_FIELDS,
        "state_now",
        "result_summary",
        "timeline",
        "payload_json",
        "result_json",
        "envelope_json",
    )
    # The page leads with what an operator asks first: where is it, what did MT5 say, what happened when.
    fieldsets = (
        ("Now", {"fields": ("state_now", "result_summary")}),
        ("Timeline: state changes and every MT5 attempt", {"fields": ("timeline",)}),
        ("Command", {"fields": SUMMARY_FIELDS}),
        ("Times (UTC)", {"fields": TIMESTAMP_FIELDS}),
        ("Tracing", {"fields": TRACE_FIELDS}),
        ("MT5 result, whole", {"fields": ("result_json",)}),
        ("Payload as validated", {"fields": ("payload_json",)}),
        ("Raw envelope as received", {"fields": ("envelope_json",)}),
    )

    @display(description="state", ordering="state", label=STATE_LABELS)
    def state_label(self, obj: Command) -> str:
        return obj.state

    @display(description="lane", label=STATE_LABELS)
    def lane_label(self, obj: Command) -> str:
        return obj.lane

    @display(description="age", ordering="received_at")
    def age_column(self, obj: Command) -> str:
        return age(obj.received_at)

    @display(description="account")
    def account_link(self, obj: Command) -> SafeString | str:
        risk_url = reverse("admin:policies_tradingaccount_risk", args=[obj.account_id])
        return format_html(
            '{} · <a class="text-primary-600 underline" href="{}">risk chart</a>', admin_link(obj.account), risk_url
        )

    @display(description="idempotency record")
    def idempotency_record_link(self, obj: Command) -> SafeString | str:
        record = IdempotencyRecord.objects.filter(tenant_id=obj.tenant_id, key=obj.idempotency_key).first()
        return admin_link(record, obj.idempotency_key) if record else "— (pruned after its retention)"

    @display(description="related")
    def related_links(self, obj: Command) -> SafeString | str:
        from callbacks.models import CallbackDelivery

        links: list[SafeString] = []
        for action_ in obj.protective_actions.all()[:5]:
            links.append(format_html("protective action: {}", admin_link(action_)))
        for delivery in CallbackDelivery.objects.filter(source_kind="command", source_id=str(obj.pk))[:5]:
            links.append(format_html("command_result callback: {} ({})", admin_link(delivery), delivery.status))
        if not links:
            return "—"
        return format_html("<br>".join(["{}"] * len(links)), *links)

    @display(description="state")
    def state_now(self, obj: Command) -> SafeString:
        done = f" · finished {utc(obj.finished_at)}" if obj.finished_at else f" · received {age(obj.received_at)} ago"
        return format_html(
            '<span class="panel-badge {}" id="command-state">{}</span> {} on the {} lane, {} attempt(s){}',
            {"success": "ok", "danger": "danger", "warning": "warning"}.get(STATE_LABELS.get(obj.state, ""), "info"),
            obj.state,
            obj.command_type,
            obj.lane,
            obj.attempts,
            done,
        )

    @display(description="MT5 said")
    def result_summary(self, obj: Command) -> SafeString | str:
        result = obj.result or {}
        said = " ".join(
            str(result[k]) for k in ("retcode", "retcode_name", "message") if result.get(k) not in (None, "")
        )
        error = f"{obj.error_code}: {obj.error_message}" if obj.error_code or obj.error_message else ""
        if not said and not error:
            return "— (nothing yet)"
        return format_html('<span id="command-result">{}</span>', " · ".join(part for part in (said, error) if part))

    @display(description="timeline")
    def timeline(self, obj: Command) -> SafeString:
        rows = []
        for event in obj.events.all():
            change = (
                f"{event.from_state or '·'} → {event.to_state}" if event.kind == CommandEvent.Kind.TRANSITION else ""
            )
            rows.append([event.at, event.kind, change, event.attempt, event.note or None, _exchange(event)])
        return table_html(["at", "kind", "state change", "attempt", "note", "MT5 request and result"], rows)

    @display(description="payload")
    def payload_json(self, obj: Command) -> SafeString:
        return pretty_json(obj.payload)

    @display(description="result")
    def result_json(self, obj: Command) -> SafeString:
        return pretty_json(obj.result)

    @display(description="envelope")
    def envelope_json(self, obj: Command) -> SafeString:
        return pretty_json(obj.envelope)

    # --- cancel: queued (or received) → cancelled through the state machine ---------------------

    def has_cancel_permission(self, request: HttpRequest, object_id: str | None = None) -> bool:
        """Offered on a command's page only while it can still be cancelled (never on a finished one)."""
        if not request.user.has_perm("panel.cancel_command"):
            return False
        if object_id is None:
            return True
        state = (
            Command.objects.filter(pk=object_id).values_list("state", flat=True).first()
            if object_id.isdigit()
            else None
        )
        return state is not None and can_transition(state, State.CANCELLED)

    @admin.action(description="Cancel selected commands that have not started", permissions=["cancel"])
    def cancel_selected(self, request: HttpRequest, queryset: QuerySet[Command]) -> None:
        cancelled = skipped = 0
        for command in queryset.select_related("tenant")[:500]:
            if command_cancel(user=request.user, command=command):
                cancelled += 1
            else:
                skipped += 1
        self.message_user(request, f"Cancelled {cancelled} command(s); {skipped} had already started or finished.")

    @action(description="Cancel", icon="cancel", permissions=["cancel"])
    def cancel_detail(self, request: HttpRequest, object_id: str) -> HttpResponse:
        command = self.get_object(request, object_id)
        if command is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)

        def run() -> HttpResponse:
            if command_cancel(user=request.user, command=command):
                self.message_user(request, f"Command {command.command_id} cancelled.", messages.SUCCESS)
            else:
                self.message_user(
                    request, f"Command {command.command_id} is {command.state}: too late to cancel.", messages.WARNING
                )
            return redirect(reverse("admin:commands_command_change", args=[command.pk]))

        return confirm_then(
            self,
            request,
            obj=command,
            title=f"Cancel {command.command_id}?",
            message=(
                f"The command is {command.state}. Cancelling moves it to cancelled if no lane has picked it up yet; "
                "Laravel is told through the command_result callback."
            ),
            button="Cancel the command",
            run=run,
        )


@admin.register(CommandEvent)
class CommandEventAdmin(BigTableMixin, ReadOnlyMixin, ScopedAdmin[CommandEvent]):
    list_display = ("at", "command_link", "kind", "change", "attempt", "note")
    list_select_related = ("command",)
    list_filter = (TenantFilter, "kind", ("at", RangeDateTimeFilter))
    list_filter_submit = True
    search_fields = ("command__command_id__istartswith",)
    search_help_text = "Command id: its beginning, in any case."
    ordering = ("-at", "-id")
    sortable_by = ("at",)
    readonly_fields = ("command_link", "kind", "at", "change", "attempt", "note", "request_json", "response_json")
    fields = readonly_fields

    @display(description="command")
    def command_link(self, obj: CommandEvent) -> SafeString | str:
        return admin_link(obj.command, obj.command.command_id)

    @display(description="state change")
    def change(self, obj: CommandEvent) -> str:
        return f"{obj.from_state or '·'} → {obj.to_state}" if obj.to_state else ""

    @display(description="MT5 request")
    def request_json(self, obj: CommandEvent) -> SafeString:
        return pretty_json(obj.request)

    @display(description="MT5 result")
    def response_json(self, obj: CommandEvent) -> SafeString:
        return pretty_json(obj.response)


@admin.register(IdempotencyRecord)
class IdempotencyRecordAdmin(BigTableMixin, ReadOnlyMixin, ScopedAdmin[IdempotencyRecord]):
    list_display = (
        "key",
        "tenant",
        "request_type",
        "method",
        "path",
        "status_code",
        "completed",
        "created_at",
        "expires_at",
    )
    list_select_related = ("tenant",)
    list_filter = (TenantFilter, "request_type", ("created_at", RangeDateTimeFilter))
    list_filter_submit = True
    search_fields = ("key__istartswith", "correlation_id__istartswith")
    search_help_text = "Idempotency key or correlation id: its beginning, in any case."
    ordering = ("-created_at",)
    sortable_by = ("created_at",)
    readonly_fields = (
        "tenant",
        "key",
        "fingerprint",
        "method",
        "path",
        "request_type",
        "status_code",
        "correlation_id",
        "created_at",
        "completed_at",
        "expires_at",
        "command_link",
        "response_json",
    )
    fields = readonly_fields

    @display(description="completed", boolean=True)
    def completed(self, obj: IdempotencyRecord) -> bool:
        return obj.completed_at is not None

    @display(description="command")
    def command_link(self, obj: IdempotencyRecord) -> SafeString | str:
        # iexact reads the key's prefix index; the exact match then keeps only this very key.
        command = Command.objects.filter(
            tenant_id=obj.tenant_id, idempotency_key__iexact=obj.key, idempotency_key=obj.key
        ).first()
        return admin_link(command, command.command_id) if command else "—"

    @display(description="stored response (replayed for the same key)")
    def response_json(self, obj: IdempotencyRecord) -> SafeString:
        return pretty_json(obj.response_body)


@admin.register(LaneHeartbeat)
class LaneHeartbeatAdmin(ReadOnlyMixin, ScopedAdmin[LaneHeartbeat]):
    """The lanes' worker processes; infrastructure of every tenant, so only all-tenant users see it."""

    list_display = ("lane", "host", "pid", "alive", "seen_at")
    list_filter = ("lane",)
    ordering = ("lane", "-seen_at")
    readonly_fields = ("lane", "host", "pid", "seen_at")

    @display(description="alive", boolean=True)
    def alive(self, obj: LaneHeartbeat) -> bool:
        return timezone.now() - obj.seen_at < timedelta(seconds=ALIVE_WITHIN_SECONDS)
