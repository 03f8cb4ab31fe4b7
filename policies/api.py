"""GET /api/v1/mt5/accounts/{login}/protective-actions: what the bridge did, and why."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.pagination import CursorPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from commands import schema_docs as docs
from commands.api import TENANT_PARAM
from commands.intake import read_tenant
from policies.models import ProtectiveAction
from policies.selectors import protective_actions_of
from policies.services import account_get_for_tenant


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


class ActionPagination(CursorPagination):
    ordering = ("-created_at", "-id")
    page_size = 50


class ProtectiveActionsView(APIView):
    @extend_schema(
        operation_id="protective_actions_list",
        summary="The account's protective action history, newest first",
        parameters=[TENANT_PARAM],
        responses={
            200: docs.cursor_page("ProtectiveActionPage", ProtectiveActionSerializer(many=True)),
            **docs.GET_PROBLEMS,
        },
    )
    def get(self, request: Request, account_login: int) -> Response:
        account = account_get_for_tenant(tenant=read_tenant(request), login=account_login)
        paginator = ActionPagination()
        page = paginator.paginate_queryset(protective_actions_of(account), request, view=self)
        return paginator.get_paginated_response(ProtectiveActionSerializer(page, many=True).data)
