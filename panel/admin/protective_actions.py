"""Every protective action: what the risk engine did, why (the numbers), when, the command that acted and
the report to Laravel."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import CharField, OuterRef, QuerySet, Subquery
from django.db.models.functions import Cast
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.safestring import SafeString
from unfold.contrib.filters.admin import ChoicesDropdownFilter, DropdownFilter, RangeDateTimeFilter
from unfold.decorators import display

from panel.admin.base import (
    STATE_LABELS,
    BigTableMixin,
    ReadOnlyMixin,
    ScopedAdmin,
    TenantFilter,
    admin_link,
    money_column,
    search_by_login,
    table_html,
)
from panel.formatting import plain_number
from policies.models import ProtectiveAction
from risk.rules import RULES


class RuleFilter(DropdownFilter):
    title = "rule"
    parameter_name = "rule_key"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]) -> list[tuple[str, str]]:
        return [(rule.key, rule.key) for rule in RULES]

    def queryset(self, request: HttpRequest, queryset: QuerySet[ProtectiveAction]) -> QuerySet[ProtectiveAction]:
        return queryset.filter(rule_key=self.value()) if self.value() else queryset


@admin.register(ProtectiveAction)
class ProtectiveActionAdmin(BigTableMixin, ReadOnlyMixin, ScopedAdmin[ProtectiveAction]):
    list_display = (
        "created_at",
        "account",
        "rule_key",
        "action",
        "scope",
        "status_label",
        "measured_money",
        "floor_or_limit_money",
        "command_column",
        "report_column",
    )
    list_select_related = ("account", "tenant", "command")
    list_filter = (
        TenantFilter,
        RuleFilter,
        ("execution_status", ChoicesDropdownFilter),
        ("created_at", RangeDateTimeFilter),
    )
    list_filter_submit = True
    search_fields = ("account__login",)
    search_help_text = "Account login (exact)."
    ordering = ("-created_at",)
    sortable_by = ("created_at",)
    actions = ("export_csv",)
    export_fields = (
        "created_at",
        "tenant__tenant_id",
        "account__login",
        "rule_key",
        "scope",
        "policy_version",
        "action",
        "execution_status",
        "measured",
        "floor_or_limit",
        "threshold_used",
        "equity",
        "balance",
        "command__command_id",
    )
    WHAT = (
        "rule_key",
        "action",
        "scope",
        "policy_version",
        "enabled",
        "hard",
        "account",
        "tenant",
        "ticket",
        "symbol",
        "volume_lots",
    )
    WHY = (
        "threshold_pct",
        "floor_or_limit_money",
        "measured_money",
        "equity_money",
        "balance_money",
        "floating_pnl_money",
        "closed_pnl_money",
        "violation_count",
        "explanation_table",
    )
    WHEN = ("detection_timestamp", "execution_timestamp", "created_at")
    OUTCOME = ("execution_status", "mt5_response", "error_message", "positions_table")
    GOAL = (
        "action_id",
        "goal",
        "goal_met_at",
        "attempt_count",
        "attempt_ended_at",
        "next_attempt_at",
        "report_sequence",
        "alerted_at",
    )
    readonly_fields = (*WHAT, *WHY, *WHEN, *OUTCOME, *GOAL, "command_detail", "report_detail")
    fieldsets = (
        ("What happened", {"fields": WHAT}),
        ("The goal, pursued until MT5 shows it holding", {"fields": GOAL}),
        ("Why: the numbers", {"fields": WHY}),
        ("When (UTC)", {"fields": WHEN}),
        ("Outcome", {"fields": OUTCOME}),
        ("The command that acted", {"fields": ("command_detail",)}),
        ("The report to Laravel", {"fields": ("report_detail",)}),
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[ProtectiveAction]:
        from callbacks.models import CallbackDelivery

        # The report's delivery status in the same query as the row (the callback_source index).
        report = CallbackDelivery.objects.filter(
            source_kind="protective_action", source_id=Cast(OuterRef("pk"), output_field=CharField())
        ).order_by("-id")
        return super().get_queryset(request).annotate(report_status=Subquery(report.values("status")[:1]))

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[ProtectiveAction], search_term: str
    ) -> tuple[QuerySet[ProtectiveAction], bool]:
        by_login = search_by_login(queryset, search_term, "account__login")
        return (by_login, False) if by_login is not None else (queryset.none() if search_term else queryset, False)

    @display(description="status", label=STATE_LABELS)
    def status_label(self, obj: ProtectiveAction) -> str:
        return obj.execution_status

    @display(description="command")
    def command_column(self, obj: ProtectiveAction) -> str:
        return f"{obj.command.command_id} ({obj.command.state})" if obj.command else "—"

    @display(description="report", label=STATE_LABELS)
    def report_column(self, obj: ProtectiveAction) -> str:
        return getattr(obj, "report_status", None) or "—"

    # Money in the account's currency digits, lots and percentages without trailing zeros (never 8 decimals).
    measured_money = money_column("measured")
    floor_or_limit_money = money_column("floor_or_limit", "floor or limit")
    equity_money = money_column("equity")
    balance_money = money_column("balance")
    floating_pnl_money = money_column("floating_pnl", "floating P&L")
    closed_pnl_money = money_column("closed_pnl", "closed P&L")

    @display(description="volume (lots)")
    def volume_lots(self, obj: ProtectiveAction) -> str:
        return plain_number(obj.volume)

    @display(description="threshold used (%)")
    def threshold_pct(self, obj: ProtectiveAction) -> str:
        return plain_number(obj.threshold_used)

    @display(description="explanation")
    def explanation_table(self, obj: ProtectiveAction) -> SafeString | str:
        """RISK_RULES "Explaining a breach", for support: what was measured against what, and why."""
        explanation = obj.explanation or {}
        if not explanation:
            return "—"
        reference = explanation.get("reference") or {}
        params = explanation.get("rule_params") or {}
        rows: list[list[Any]] = [
            ["measured", f"{explanation.get('measured')} ({explanation.get('measured_kind')})"],
            ["floor or limit", explanation.get("floor_or_limit")],
            [
                "reference",
                f"{reference.get('kind')} {reference.get('value')} ({reference.get('source')})" if reference else "—",
            ],
            ["high-water mark", explanation.get("high_water_mark") or "—"],
            *([name, value] for name, value in sorted(params.items())),
        ]
        return table_html(["", "value"], rows)

    @display(description="positions")
    def positions_table(self, obj: ProtectiveAction) -> SafeString | str:
        if not obj.positions:
            return "—"
        keys = sorted({key for position in obj.positions if isinstance(position, dict) for key in position})
        rows = [[position.get(key) for key in keys] for position in obj.positions if isinstance(position, dict)]
        return table_html(keys, rows)

    @display(description="command")
    def command_detail(self, obj: ProtectiveAction) -> SafeString | str:
        command = obj.command
        if command is None:
            return "None: recorded only (enforcement flag off) or not raised yet."
        return format_html(
            "{} — {} on the {} lane, {} attempt(s), {}",
            admin_link(command, command.command_id),
            command.command_type,
            command.lane,
            command.attempts,
            command.state,
        )

    @display(description="delivery")
    def report_detail(self, obj: ProtectiveAction) -> SafeString | str:
        from callbacks.models import CallbackDelivery

        delivery = (
            CallbackDelivery.objects.filter(source_kind="protective_action", source_id=str(obj.pk))
            .order_by("-id")
            .first()
        )
        if delivery is None:
            return "No report queued yet (it is written when the action completes)."
        return format_html(
            "{} — {}, {} attempt(s), next try {}, last HTTP status {}",
            admin_link(delivery, delivery.idempotency_key),
            delivery.status,
            delivery.attempts,
            delivery.next_attempt_at or "—",
            delivery.last_status_code or "—",
        )
