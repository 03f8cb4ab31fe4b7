"""Trading accounts with their risk state at a glance and the risk chart page; the risk-state rows, the
samples behind the chart, and the risk monitors' heartbeats."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString
from unfold.contrib.filters.admin import RangeDateTimeFilter
from unfold.decorators import action, display

from execution.gateway import GatewayUnavailable
from execution.gateways import get_gateway
from panel.admin.base import (
    BigTableMixin,
    ReadOnlyMixin,
    ScopedAdmin,
    TenantFilter,
    admin_link,
    age,
    changelist_url,
    money_column,
    pretty_json,
    search_by_login,
    table_html,
)
from panel.charts import DEFAULT_RANGE, RANGES, risk_series
from panel.formatting import money, utc
from policies.models import AccountRisk, MonitorHeartbeat, ProtectiveAction, RiskSample, TradingAccount
from risk.breach import BreachStatus, breach_status, in_breach_q
from risk.kill_switch import Switch


def _total_floor(account: TradingAccount, risk: AccountRisk | None) -> Decimal | None:
    """The total floor, or None when the policy turns the rule off (RISK_RULES v2: a null percent)."""
    if risk is None:
        return None
    policy = account.current_policy
    if policy is not None and policy.payload.get("max_total_dd_pct", 0) is None:
        return None
    return risk.total_floor


class RiskFilter(admin.SimpleListFilter):
    """The question an operator asks first: which accounts are in trouble? "In breach" is risk.breach's one
    definition, the same query the dashboard counts."""

    title = "risk"
    parameter_name = "risk"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]) -> list[tuple[str, str]]:
        return [
            ("breached", "In breach (hard, disabled or below a floor)"),
            ("ok", "Within limits"),
            ("unevaluated", "Not evaluated yet"),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[TradingAccount]) -> QuerySet[TradingAccount]:
        match self.value():
            case "breached":
                return queryset.filter(in_breach_q())
            case "ok":
                return queryset.filter(risk__isnull=False).exclude(in_breach_q())
            case "unevaluated":
                return queryset.filter(risk__isnull=True).exclude(in_breach_q())
        return queryset


def _risk_of(account: TradingAccount) -> AccountRisk | None:
    try:
        return account.risk
    except AccountRisk.DoesNotExist:
        return None


def _breach_text(account: TradingAccount) -> str:
    breach = _breach_of(account)
    return "no" if breach is None else f"{breach.reason} (since {utc(breach.since)})"


def _breach_of(account: TradingAccount) -> BreachStatus | None:
    """risk.breach's verdict, worked out once per row however many columns show it."""
    if not hasattr(account, "_panel_breach"):
        account._panel_breach = breach_status(account, _risk_of(account))  # type: ignore[attr-defined]
    return account._panel_breach  # type: ignore[attr-defined]


@admin.register(TradingAccount)
class TradingAccountAdmin(ReadOnlyMixin, ScopedAdmin[TradingAccount]):
    list_display = (
        "login",
        "server",
        "tenant",
        "risk_status",
        "breach_reason",
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
    actions_detail = ("open_risk_chart", "switch_disable", "switch_close_all", "switch_enable")
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
        "server_trading",
        "trading_disabled_at",
        "risk_summary",
        "recent_commands",
        "recent_actions",
        "last_snapshot_at",
        "snapshot_json",
        "created_at",
    )
    fieldsets = (
        ("Account", {"fields": ("login", "server", "tenant", "trading_account_id", "platform", "created_at")}),
        (
            "Policy and trading",
            {
                "fields": (
                    "policy_link",
                    "trading_enabled",
                    "trading_disabled_reason",
                    "trading_disabled_at",
                    "server_trading",
                )
            },
        ),
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

    @display(description="risk", label={"ok": "success", "in breach": "danger", "not evaluated": "info"})
    def risk_status(self, obj: TradingAccount) -> str:
        if _breach_of(obj) is not None:
            return "in breach"
        return "not evaluated" if _risk_of(obj) is None else "ok"

    @display(description="breach: why, since")
    def breach_reason(self, obj: TradingAccount) -> SafeString | str:
        breach = _breach_of(obj)
        if breach is None:
            return "—"
        return format_html('{}<br><span class="panel-muted">since {}</span>', breach.reason, utc(breach.since))

    @display(description="policy")
    def policy_version(self, obj: TradingAccount) -> str:
        return f"v{obj.current_policy.policy_version}" if obj.current_policy else "—"

    @display(description="equity")
    def equity(self, obj: TradingAccount) -> str:
        risk = _risk_of(obj)
        return money(risk.equity if risk else None, obj, with_currency=True)

    @display(description="daily headroom")
    def daily_headroom(self, obj: TradingAccount) -> str:
        risk = _risk_of(obj)
        if risk is None or risk.measured is None or risk.daily_floor is None:
            return "—"
        return money(risk.measured - risk.daily_floor, obj)

    @display(description="total headroom")
    def total_headroom(self, obj: TradingAccount) -> str:
        risk = _risk_of(obj)
        floor = _total_floor(obj, risk)
        if risk is None or risk.measured is None or floor is None:
            return "—"
        return money(risk.measured - floor, obj)

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
                ["measured", money(risk.measured, obj)],
                ["equity / balance", f"{money(risk.equity, obj)} / {money(risk.balance, obj)}"],
                ["daily floor", money(risk.daily_floor, obj)],
                ["total floor", money(_total_floor(obj, risk), obj) if _total_floor(obj, risk) is not None else "off"],
                ["high-water mark", money(risk.high_water_mark, obj)],
                [
                    "daily reference",
                    f"{money(risk.daily_reference, obj)} ({risk.daily_reference_date}, {risk.daily_reference_source})",
                ],
                ["violations", risk.violation_count],
                ["hard breach", "yes" if risk.hard_breached else "no"],
                ["in breach", _breach_text(obj)],
                ["trading block", risk.trading_block or "none"],
                ["evaluated at", risk.evaluated_at],
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
        return format_html("{}{}", table_html(["command", "type", "state", "lane", "received"], rows), more)

    @display(description="protective actions")
    def recent_actions(self, obj: TradingAccount) -> SafeString:
        rows = [
            [admin_link(a, a.rule_key), a.scope, a.execution_status, a.detection_timestamp]
            for a in ProtectiveAction.objects.filter(account=obj).order_by("-created_at")[:10]
        ]
        return table_html(["rule", "scope", "status", "detected"], rows)

    @display(description="trading on the MT5 server")
    def server_trading(self, obj: TradingAccount) -> str:
        """The user's trade right as the MT5 server has it now (the Manager API backend only)."""
        try:
            disabled = get_gateway().server_trade_disabled(obj.login, obj.server)
        except GatewayUnavailable as exc:
            return f"unknown: MT5 cannot be reached ({exc.message})"
        if disabled is None:
            return "not known with this MT5 backend (the bridge itself refuses new positions when disabled)"
        if disabled:
            return "disabled on the server (USER_RIGHT_TRADE_DISABLED): the trader's own terminal is refused too"
        return "enabled on the server"

    @display(description="snapshot")
    def snapshot_json(self, obj: TradingAccount) -> SafeString:
        return pretty_json(obj.last_snapshot)

    # --- the account page: equity and balance over time with floors and breaches --------------

    def get_urls(self) -> list[URLPattern]:
        risk_view = self.admin_site.admin_view(self.risk_view)
        return [path("<path:object_id>/risk/", risk_view, name="policies_tradingaccount_risk"), *super().get_urls()]

    # --- kill switches: each opens its confirmation (risk.kill_switch through panel.services); offered where it applies

    def _enabled(self, object_id: str) -> bool | None:
        return TradingAccount.objects.filter(pk=object_id).values_list("trading_enabled", flat=True).first()

    def has_switch_off_permission(self, request: HttpRequest, object_id: str | None = None) -> bool:
        may = request.user.has_perm("panel.use_kill_switch")
        return may and (object_id is None or self._enabled(object_id) is True)

    def has_switch_flat_permission(self, request: HttpRequest, object_id: str | None = None) -> bool:
        return request.user.has_perm("panel.use_kill_switch")

    def has_switch_on_permission(self, request: HttpRequest, object_id: str | None = None) -> bool:
        may = request.user.has_perm("panel.use_kill_switch")
        return may and (object_id is None or self._enabled(object_id) is False)

    @action(description="Disable trading", icon="block", url_path="disable-trading", permissions=["switch_off"])
    def switch_disable(self, request: HttpRequest, object_id: str) -> HttpResponse:
        return redirect(reverse("panel:kill-switch", args=["account", object_id, Switch.DISABLE]))

    @action(description="Close all and disable", icon="dangerous", url_path="close-all", permissions=["switch_flat"])
    def switch_close_all(self, request: HttpRequest, object_id: str) -> HttpResponse:
        return redirect(reverse("panel:kill-switch", args=["account", object_id, Switch.CLOSE_ALL_AND_DISABLE]))

    @action(description="Enable trading", icon="check_circle", url_path="enable-trading", permissions=["switch_on"])
    def switch_enable(self, request: HttpRequest, object_id: str) -> HttpResponse:
        return redirect(reverse("panel:kill-switch", args=["account", object_id, Switch.ENABLE]))

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
            "breach": _breach_of(account),
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
        "measured_money",
        "daily_floor_money",
        "total_floor_money",
        "high_water_mark_money",
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
    measured_money = money_column("measured")
    daily_floor_money = money_column("daily_floor", "daily floor")
    total_floor_money = money_column("total_floor", "total floor")
    high_water_mark_money = money_column("high_water_mark", "high-water mark")

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
