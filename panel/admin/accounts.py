"""Trading accounts with their risk state at a glance and the risk chart page; the risk-state rows, the
samples behind the chart, and the risk monitors' heartbeats."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString
from unfold.contrib.filters.admin import RangeDateTimeFilter
from unfold.decorators import action, display

from panel.admin.base import (
    BigTableMixin,
    ReadOnlyMixin,
    ScopedAdmin,
    TenantFilter,
    admin_link,
    age,
    changelist_url,
    pretty_json,
    search_by_login,
    table_html,
)
from panel.charts import DEFAULT_RANGE, RANGES, risk_series
from policies.models import AccountRisk, MonitorHeartbeat, ProtectiveAction, RiskSample, TradingAccount


def _total_floor(account: TradingAccount, risk: AccountRisk | None) -> Decimal | None:
    """The total floor, or None when the policy turns the rule off (RISK_RULES v2: a null percent)."""
    if risk is None:
        return None
    policy = account.current_policy
    if policy is not None and policy.payload.get("max_total_dd_pct", 0) is None:
        return None
    return risk.total_floor


def _money(value: Decimal | None) -> str:
    return "—" if value is None else f"{value:,.2f}"


class RiskFilter(admin.SimpleListFilter):
    """The question an operator asks first: which accounts are in trouble?"""

    title = "risk"
    parameter_name = "risk"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]) -> list[tuple[str, str]]:
        return [
            ("breached", "Hard breach"),
            ("blocked", "Trading blocked"),
            ("ok", "Within limits"),
            ("unevaluated", "Not evaluated yet"),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[TradingAccount]) -> QuerySet[TradingAccount]:
        match self.value():
            case "breached":
                return queryset.filter(risk__hard_breached=True)
            case "blocked":
                return queryset.filter(Q(trading_enabled=False) | ~Q(risk__trading_block=""), risk__isnull=False)
            case "ok":
                return queryset.filter(risk__hard_breached=False, risk__trading_block="", trading_enabled=True)
            case "unevaluated":
                return queryset.filter(risk__isnull=True)
        return queryset


def _risk_of(account: TradingAccount) -> AccountRisk | None:
    try:
        return account.risk
    except AccountRisk.DoesNotExist:
        return None


@admin.register(TradingAccount)
class TradingAccountAdmin(ReadOnlyMixin, ScopedAdmin[TradingAccount]):
    list_display = (
        "login",
        "server",
        "tenant",
        "risk_status",
        "trading_enabled",
        "policy_version",
        "equity",
        "daily_headroom",
        "total_headroom",
        "evaluated",
        "chart_link",
    )
    list_select_related = ("tenant", "current_policy", "risk")
    list_filter = (TenantFilter, RiskFilter, "trading_enabled")
    search_fields = ("server", "trading_account_id")
    search_help_text = "Login (exact), server or Laravel's trading account id."
    show_full_result_count = False
    list_per_page = 50
    actions = ("export_csv",)
    actions_detail = ("open_risk_chart",)
    export_fields = ("login", "server", "tenant__tenant_id", "trading_account_id", "trading_enabled", "created_at")
    readonly_fields = (
        "login",
        "server",
        "tenant",
        "trading_account_id",
        "platform",
        "policy_link",
        "trading_enabled",
        "trading_disabled_reason",
        "risk_summary",
        "recent_commands",
        "recent_actions",
        "last_snapshot_at",
        "snapshot_json",
        "created_at",
    )
    fieldsets = (
        ("Account", {"fields": ("login", "server", "tenant", "trading_account_id", "platform", "created_at")}),
        ("Policy and trading", {"fields": ("policy_link", "trading_enabled", "trading_disabled_reason")}),
        ("Risk state", {"fields": ("risk_summary",)}),
        ("Recent activity", {"fields": ("recent_commands", "recent_actions")}),
        ("Last MT5 snapshot", {"fields": ("last_snapshot_at", "snapshot_json")}),
    )

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[TradingAccount], search_term: str
    ) -> tuple[QuerySet[TradingAccount], bool]:
        by_login = search_by_login(queryset, search_term, "login")
        if by_login is not None:
            return by_login, False
        return super().get_search_results(request, queryset, search_term)

    @display(
        description="risk",
        label={"ok": "success", "hard breach": "danger", "blocked": "warning", "not evaluated": "info"},
    )
    def risk_status(self, obj: TradingAccount) -> str:
        risk = _risk_of(obj)
        if risk is None:
            return "not evaluated"
        if risk.hard_breached:
            return "hard breach"
        if risk.trading_block or not obj.trading_enabled:
            return "blocked"
        return "ok"

    @display(description="policy")
    def policy_version(self, obj: TradingAccount) -> str:
        return f"v{obj.current_policy.policy_version}" if obj.current_policy else "—"

    @display(description="equity")
    def equity(self, obj: TradingAccount) -> str:
        risk = _risk_of(obj)
        return _money(risk.equity if risk else None)

    @display(description="daily headroom")
    def daily_headroom(self, obj: TradingAccount) -> str:
        risk = _risk_of(obj)
        if risk is None or risk.measured is None or risk.daily_floor is None:
            return "—"
        return _money(risk.measured - risk.daily_floor)

    @display(description="total headroom")
    def total_headroom(self, obj: TradingAccount) -> str:
        risk = _risk_of(obj)
        floor = _total_floor(obj, risk)
        if risk is None or risk.measured is None or floor is None:
            return "—"
        return _money(risk.measured - floor)

    @display(description="evaluated")
    def evaluated(self, obj: TradingAccount) -> str:
        risk = _risk_of(obj)
        return f"{age(risk.evaluated_at)} ago" if risk and risk.evaluated_at else "—"

    @display(description="chart")
    def chart_link(self, obj: TradingAccount) -> SafeString:
        url = reverse("admin:policies_tradingaccount_risk", args=[obj.pk])
        return format_html('<a class="text-primary-600 underline" href="{}">risk chart</a>', url)

    @display(description="current policy")
    def policy_link(self, obj: TradingAccount) -> SafeString | str:
        if obj.current_policy is None:
            return "—"
        return admin_link(obj.current_policy, f"version {obj.current_policy.policy_version}")

    @display(description="risk state")
    def risk_summary(self, obj: TradingAccount) -> SafeString | str:
        risk = _risk_of(obj)
        if risk is None:
            return "Not evaluated yet (no policy snapshot, or the risk monitor has not run)."
        return table_html(
            ["", "value"],
            [
                ["measured", _money(risk.measured)],
                ["equity / balance", f"{_money(risk.equity)} / {_money(risk.balance)}"],
                ["daily floor", _money(risk.daily_floor)],
                ["total floor", _money(_total_floor(obj, risk)) if _total_floor(obj, risk) is not None else "off"],
                ["high-water mark", _money(risk.high_water_mark)],
                [
                    "daily reference",
                    f"{_money(risk.daily_reference)} ({risk.daily_reference_date}, {risk.daily_reference_source})",
                ],
                ["violations", risk.violation_count],
                ["hard breach", "yes" if risk.hard_breached else "no"],
                ["trading block", risk.trading_block or "none"],
                ["evaluated at (UTC)", risk.evaluated_at],
            ],
        )

    @display(description="commands")
    def recent_commands(self, obj: TradingAccount) -> SafeString:
        from commands.models import Command

        rows = [
            [admin_link(c, c.command_id), c.command_type, c.state, c.lane, c.received_at]
            for c in Command.objects.filter(account=obj).order_by("-received_at")[:10]
        ]
        more = format_html(
            '<a class="text-primary-600 underline" href="{}">all commands of this account</a>',
            changelist_url(Command, account=obj.pk),
        )
        return format_html("{}{}", table_html(["command", "type", "state", "lane", "received (UTC)"], rows), more)

    @display(description="protective actions")
    def recent_actions(self, obj: TradingAccount) -> SafeString:
        rows = [
            [admin_link(a, a.rule_key), a.scope, a.execution_status, a.detection_timestamp]
            for a in ProtectiveAction.objects.filter(account=obj).order_by("-created_at")[:10]
        ]
        return table_html(["rule", "scope", "status", "detected (UTC)"], rows)

    @display(description="snapshot")
    def snapshot_json(self, obj: TradingAccount) -> SafeString:
        return pretty_json(obj.last_snapshot)

    # --- the account page: equity and balance over time with floors and breaches --------------

    def get_urls(self) -> list[URLPattern]:
        risk_view = self.admin_site.admin_view(self.risk_view)
        return [path("<path:object_id>/risk/", risk_view, name="policies_tradingaccount_risk"), *super().get_urls()]

    @action(description="Risk chart", icon="show_chart", url_path="risk-chart")
    def open_risk_chart(self, request: HttpRequest, object_id: str) -> HttpResponse:
        return redirect(reverse("admin:policies_tradingaccount_risk", args=[object_id]))

    def risk_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        account = self.get_object(request, object_id)
        if account is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        range_key = request.GET.get("range", DEFAULT_RANGE)
        chart = risk_series(account, range_key)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Risk of {account}",
            "opts": self.opts,
            "account": account,
            "risk": _risk_of(account),
            "chart": chart,
            "ranges": RANGES.values(),
            "range_key": chart["range"],
            "actions": ProtectiveAction.objects.filter(account=account)
            .select_related("command")
            .order_by("-created_at")[:20],
            "change_url": reverse("admin:policies_tradingaccount_change", args=[account.pk]),
        }
        return TemplateResponse(request, "panel/account_risk.html", context)


@admin.register(AccountRisk)
class AccountRiskAdmin(ReadOnlyMixin, ScopedAdmin[AccountRisk]):
    list_display = (
        "account",
        "policy_version",
        "measured",
        "daily_floor",
        "total_floor",
        "high_water_mark",
        "violation_count",
        "hard_breached",
        "trading_block",
        "evaluated",
    )
    list_select_related = ("account",)
    list_filter = (TenantFilter, "hard_breached")
    show_full_result_count = False
    ordering = ("account__login",)
    readonly_fields = tuple(f.name for f in AccountRisk._meta.concrete_fields if f.name != "id")

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[AccountRisk], search_term: str
    ) -> tuple[QuerySet[AccountRisk], bool]:
        by_login = search_by_login(queryset, search_term, "account__login")
        return (by_login, False) if by_login is not None else (queryset.none() if search_term else queryset, False)

    search_fields = ("account__login",)
    search_help_text = "Account login (exact)."

    @display(description="evaluated")
    def evaluated(self, obj: AccountRisk) -> str:
        return f"{age(obj.evaluated_at)} ago" if obj.evaluated_at else "—"


@admin.register(RiskSample)
class RiskSampleAdmin(BigTableMixin, ReadOnlyMixin, ScopedAdmin[RiskSample]):
    list_display = ("at", "account", "equity", "balance", "daily_floor", "total_floor", "below_a_floor")
    list_select_related = ("account",)
    list_filter = (TenantFilter, ("at", RangeDateTimeFilter))
    list_filter_submit = True
    search_fields = ("account__login",)
    search_help_text = "Account login (exact)."
    ordering = ("-at",)
    sortable_by = ("at",)
    readonly_fields = ("account", "at", "equity", "balance", "daily_floor", "total_floor")

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[RiskSample], search_term: str
    ) -> tuple[QuerySet[RiskSample], bool]:
        by_login = search_by_login(queryset, search_term, "account__login")
        return (by_login, False) if by_login is not None else (queryset.none() if search_term else queryset, False)

    @display(description="below a floor", boolean=True)
    def below_a_floor(self, obj: RiskSample) -> bool:
        floors = [floor for floor in (obj.daily_floor, obj.total_floor) if floor is not None]
        return any(obj.equity < floor for floor in floors)


@admin.register(MonitorHeartbeat)
class MonitorHeartbeatAdmin(ReadOnlyMixin, ScopedAdmin[MonitorHeartbeat]):
    list_display = (
        "monitor_id",
        "hostname",
        "pid",
        "alive",
        "accounts_watched",
        "last_cycle_ms",
        "heartbeat_at",
        "started_at",
    )
    ordering = ("-heartbeat_at",)
    readonly_fields = (
        "monitor_id",
        "hostname",
        "pid",
        "started_at",
        "heartbeat_at",
        "accounts_watched",
        "last_cycle_ms",
    )

    @display(description="alive", boolean=True)
    def alive(self, obj: MonitorHeartbeat) -> bool:
        # The monitors' own staleness rule (risk.monitor): three poll intervals, at least 2 s.
        stale_after = max(3 * settings.RISK_POLL_INTERVAL_MS / 1000, 2.0)
        return timezone.now() - obj.heartbeat_at < timedelta(seconds=stale_after)
