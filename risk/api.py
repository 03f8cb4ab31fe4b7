"""The account reads: the sync read (GET /api/v1/mt5/accounts/{login}: the live snapshot through the
gateway, or the last known one, with the risk state) and the protective action history
(GET /api/v1/mt5/accounts/{login}/protective-actions: what the bridge did, and why)."""

from __future__ import annotations

from typing import Any

from django.utils import timezone
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from bridgeproject.errors import BridgeError
from commands import schema_docs as docs
from commands.api import SERVER_PARAM, TENANT_PARAM, StrictCursorPagination, server_of
from commands.intake import read_tenant
from execution.gateway import AccountSnapshot, GatewayUnavailable
from execution.gateways import get_gateway
from execution.snapshots import snapshot_remember
from policies.models import ProtectiveAction, TradingAccount
from policies.services import account_get_for_tenant
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
        "trading_disabled_reason": account.trading_disabled_reason,
        "snapshot": snapshot,
        "risk": risk_summary(account, live),
    }
    return body


class AccountView(APIView):
    @extend_schema(
        operation_id="account_get",
        summary="Sync request: the live MT5 snapshot, the policy version and the risk state",
        parameters=[SERVER_PARAM, TENANT_PARAM],
        responses={
            200: inline_serializer(
                "Account", {"account_login": serializers.IntegerField(), "snapshot": serializers.DictField()}
            ),
            **docs.GET_PROBLEMS,
            **docs.problems(503),
        },
    )
    def get(self, request: Request, account_login: int) -> Response:
        account = account_get_for_tenant(tenant=read_tenant(request), login=account_login, server=server_of(request))
        try:
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
        snapshot = snapshot_remember(account=account, snapshot=live)
        return Response(account_body(account, snapshot, live))


class ProtectiveActionSerializer(serializers.ModelSerializer):
    account_login = serializers.IntegerField(source="account.login")
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
            "command_id",
            "command_state",
            "created_at",
        ]


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
