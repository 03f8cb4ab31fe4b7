"""The account reads: the sync read (GET /api/v1/mt5/accounts/{login}: the live snapshot through the
gateway, or the last known one, with the risk state) and the protective action history
(GET /api/v1/mt5/accounts/{login}/protective-actions: what the bridge did, and why)."""

from __future__ import annotations

from typing import Any

from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from bridgeproject.errors import BridgeError
from bridgeproject.jsonutil import blank_as_null, decimal_text, utc_iso
from commands import schema_docs as docs
from commands.api import SERVER_PARAM, TENANT_PARAM, StrictCursorPagination, server_of
from commands.intake import read_tenant
from execution.gateway import AccountSnapshot, GatewayUnavailable
from execution.gateways import get_gateway
from execution.owners import Priority, call_priority
from execution.snapshots import snapshot_remember
from policies.models import ProtectiveAction, TradingAccount
from policies.services import account_get_for_tenant
from risk.breach import breach_status
from risk.selectors import protective_actions_of, risk_summary


def account_body(
    account: TradingAccount, snapshot: dict[str, Any] | None, live: AccountSnapshot | None
) -> dict[str, Any]:
    policy = account.current_policy
    body: dict[str, Any] = {
        "account_login": account.login,
        "server": account.server,
        "trading_account_id": account.trading_account_id,
        "policy_version": policy.policy_version if policy else None,
        "account_status": account.account_status,
        "trading_enabled": account.trading_enabled,
        "trading_disabled_reason": account.trading_disabled_reason or None,
        "snapshot": snapshot,
        "risk": risk_summary(account, live),
        "in_breach": breach_json(account),
    }
    return body


def breach_json(account: TradingAccount) -> dict[str, Any] | None:
    """risk.breach's answer: null within limits, else why (most serious first) and since when."""
    status = breach_status(account)
    if status is None:
        return None
    return {"reasons": list(status.reasons), "since": utc_iso(status.since) if status.since else None}


# --- The sync read's documented shape (PROTOCOL §5, §9: money, prices and volumes are decimal strings) ---


def _decimal(**kwargs: Any) -> serializers.DecimalField:
    return serializers.DecimalField(max_digits=30, decimal_places=8, **kwargs)


class PositionReadSerializer(serializers.Serializer):
    ticket = serializers.IntegerField()
    symbol = serializers.CharField()
    side = serializers.ChoiceField(choices=["buy", "sell"])
    volume = _decimal()
    price_open = _decimal()
    price_current = _decimal()
    sl = _decimal(allow_null=True)
    tp = _decimal(allow_null=True)
    profit = _decimal()
    swap = _decimal()
    commission = _decimal()
    magic = serializers.IntegerField()
    comment = serializers.CharField()
    opened_at_utc = serializers.DateTimeField()


class PendingOrderReadSerializer(serializers.Serializer):
    ticket = serializers.IntegerField()
    symbol = serializers.CharField()
    type = serializers.CharField(help_text="buy_limit, sell_limit, buy_stop, sell_stop, ...")
    side = serializers.ChoiceField(choices=["buy", "sell"])
    volume = _decimal()
    price_open = _decimal()
    sl = _decimal(allow_null=True)
    tp = _decimal(allow_null=True)
    comment = serializers.CharField()
    placed_at_utc = serializers.DateTimeField()


class AccountSnapshotReadSerializer(serializers.Serializer):
    login = serializers.IntegerField()
    server = serializers.CharField()
    currency = serializers.CharField()
    currency_digits = serializers.IntegerField()
    leverage = serializers.IntegerField()
    balance = _decimal()
    credit = _decimal()
    equity = _decimal()
    margin = _decimal()
    free_margin = _decimal()
    margin_level = _decimal()
    profit = _decimal()
    trade_allowed = serializers.BooleanField()
    observed_at_utc = serializers.DateTimeField()
    positions = PositionReadSerializer(many=True)
    pending_orders = PendingOrderReadSerializer(many=True)


class BreachReadSerializer(serializers.Serializer):
    rule_key = serializers.CharField()
    scope = serializers.CharField()
    execution_status = serializers.CharField()
    detection_timestamp = serializers.DateTimeField()
    explanation = serializers.DictField(
        help_text='RISK_RULES v2 "Explaining a breach": measured, floor or limit, reference, high-water mark.'
    )


class RiskReadSerializer(serializers.Serializer):
    policy_version = serializers.IntegerField()
    measured = _decimal(allow_null=True, help_text="Equity or balance, as the policy's drawdown_type says.")
    daily_floor = _decimal(allow_null=True)
    total_floor = _decimal(allow_null=True, help_text="Null when the policy turns the total drawdown rule off.")
    daily_headroom = _decimal(allow_null=True)
    total_headroom = _decimal(allow_null=True)
    high_water_mark = _decimal()
    daily_reference = _decimal()
    daily_reference_date = serializers.DateField()
    daily_reference_source = serializers.CharField()
    violation_count = serializers.IntegerField()
    hard_breached = serializers.BooleanField()
    trading_enabled = serializers.BooleanField()
    trading_block = serializers.CharField(allow_null=True)
    trading_disabled_until = serializers.DateTimeField(allow_null=True)
    snapshot_at = serializers.DateTimeField(allow_null=True)
    evaluated_at = serializers.DateTimeField(allow_null=True)
    breaches = BreachReadSerializer(many=True)


class InBreachSerializer(serializers.Serializer):
    reasons = serializers.ListField(child=serializers.CharField())
    since = serializers.DateTimeField(allow_null=True)


class AccountReadSerializer(serializers.Serializer):
    """The sync read: the live MT5 snapshot, the current policy version and the risk state."""

    account_login = serializers.IntegerField()
    server = serializers.CharField()
    trading_account_id = serializers.CharField()
    policy_version = serializers.IntegerField(allow_null=True)
    account_status = serializers.CharField()
    trading_enabled = serializers.BooleanField()
    trading_disabled_reason = serializers.CharField(allow_null=True)
    snapshot = AccountSnapshotReadSerializer()
    risk = RiskReadSerializer(allow_null=True, help_text="Null until the account's first policy is applied.")
    in_breach = InBreachSerializer(
        allow_null=True, help_text="Null within limits: hard-breached, trading disabled, or below a floor now."
    )


class AccountView(APIView):
    @extend_schema(
        operation_id="account_get",
        summary="Sync request: the live MT5 snapshot, the policy version and the risk state",
        parameters=[SERVER_PARAM, TENANT_PARAM],
        responses={
            200: AccountReadSerializer,
            **docs.GET_PROBLEMS,
            **docs.problems(503),
        },
    )
    def get(self, request: Request, account_login: int) -> Response:
        account = account_get_for_tenant(tenant=read_tenant(request), login=account_login, server=server_of(request))
        try:
            with call_priority(Priority.SYNC):  # Laravel waits on it: before the monitor and normal work
                live = get_gateway().account_snapshot(account.login, account.server)
        except GatewayUnavailable as exc:
            age = (timezone.now() - account.last_snapshot_at).total_seconds() if account.last_snapshot_at else None
            raise BridgeError(
                503,
                "mt5_unavailable",
                f"The MT5 terminal cannot be reached: {exc.message}",
                extra={
                    "last_known_snapshot": account.last_snapshot,
                    "last_known_snapshot_age_s": None if age is None else round(age, 3),
                },
            ) from exc
        snapshot = snapshot_remember(account=account, snapshot=live, gateway=get_gateway())
        return Response(account_body(account, snapshot, live))


class ProtectiveActionSerializer(serializers.ModelSerializer):
    """A protective action as the API gives it (PROTOCOL §9 "Numbers"): money as decimal strings with
    the account currency's digits, volumes and thresholds as exact decimal strings, null for absent."""

    MONEY = ("floating_pnl", "closed_pnl", "equity", "balance", "floor_or_limit", "measured")
    account_login = serializers.IntegerField(source="account.login")
    symbol = serializers.CharField(allow_null=True)
    mt5_response = serializers.CharField(allow_null=True)
    error_message = serializers.CharField(allow_null=True)
    command_id = serializers.CharField(source="command.command_id", allow_null=True, default=None)
    command_state = serializers.CharField(source="command.state", allow_null=True, default=None)

    class Meta:
        model = ProtectiveAction
        fields = [
            "id",
            "account_login",
            "rule_key",
            "scope",
            "policy_version",
            "action",
            "enabled",
            "ticket",
            "symbol",
            "volume",
            "floating_pnl",
            "closed_pnl",
            "equity",
            "balance",
            "threshold_used",
            "floor_or_limit",
            "measured",
            "violation_count",
            "detection_timestamp",
            "execution_timestamp",
            "execution_status",
            "mt5_response",
            "error_message",
            "positions",
            "explanation",
            "command_id",
            "command_state",
            "created_at",
        ]

    def to_representation(self, instance: ProtectiveAction) -> dict:
        data = super().to_representation(instance)
        money = instance.account.money_digits
        for name in self.MONEY:
            data[name] = decimal_text(getattr(instance, name), money)
        for name in ("volume", "threshold_used"):
            value = getattr(instance, name)
            data[name] = None if value is None else f"{value.normalize():f}"
        for name in ("symbol", "mt5_response", "error_message"):
            data[name] = blank_as_null(data[name])
        return data


class ActionPagination(StrictCursorPagination):
    ordering = ("-created_at", "-id")
    page_size = 50


class ProtectiveActionsView(APIView):
    @extend_schema(
        operation_id="protective_actions_list",
        summary="The account's protective action history, newest first",
        parameters=[SERVER_PARAM, TENANT_PARAM],
        responses={
            200: docs.cursor_page("ProtectiveActionPage", ProtectiveActionSerializer(many=True)),
            **docs.GET_PROBLEMS,
        },
    )
    def get(self, request: Request, account_login: int) -> Response:
        account = account_get_for_tenant(tenant=read_tenant(request), login=account_login, server=server_of(request))
        paginator = ActionPagination()
        page = paginator.paginate_queryset(protective_actions_of(account), request, view=self)
        return paginator.get_paginated_response(ProtectiveActionSerializer(page, many=True).data)
