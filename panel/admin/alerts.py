"""Alerts to operators: open first, acknowledged with who and when (alerts.services sends them out)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from unfold.decorators import action, display

from alerts.models import Alert
from alerts.services import alert_acknowledge
from panel.admin.base import ScopedAdmin
from panel.formatting import utc


class OpenFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "open"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]) -> list[tuple[str, str]]:
        return [("yes", "Open"), ("no", "Acknowledged")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Alert]) -> QuerySet[Alert]:
        if self.value() == "yes":
            return queryset.filter(acknowledged_at__isnull=True)
        if self.value() == "no":
            return queryset.filter(acknowledged_at__isnull=False)
        return queryset


@admin.register(Alert)
class AlertAdmin(ScopedAdmin[Alert]):
    list_display = ("created_at", "severity_label", "kind", "title", "tenant_id", "sent", "acknowledged")
    list_filter = (OpenFilter, "kind", "severity")
    search_fields = ("title", "subject")
    ordering = ("acknowledged_at", "-created_at")
    readonly_fields = (
        "kind",
        "severity",
        "subject",
        "title",
        "body",
        "tenant_id",
        "created_at",
        "sent_at",
        "send_error",
        "acknowledged_at",
        "acknowledged_by",
    )
    fields = readonly_fields
    actions = ("acknowledge",)
    actions_detail = ("acknowledge_one",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Alert | None = None) -> bool:
        return False

    @display(description="severity", label={"critical": "danger", "warning": "warning"})
    def severity_label(self, obj: Alert) -> str:
        return obj.severity

    @display(description="sent", boolean=True)
    def sent(self, obj: Alert) -> bool:
        return obj.sent_at is not None

    @display(description="acknowledged")
    def acknowledged(self, obj: Alert) -> str:
        if obj.acknowledged_at is None:
            return "open"
        who = obj.acknowledged_by.get_username() if obj.acknowledged_by else "?"
        return f"{who}, {utc(obj.acknowledged_at)}"

    @admin.action(description="Acknowledge the selected alerts", permissions=["change"])
    def acknowledge(self, request: HttpRequest, queryset: QuerySet[Alert]) -> None:
        done = sum(alert_acknowledge(alert=alert, user=request.user) for alert in queryset)
        self.message_user(request, f"{done} alert(s) acknowledged.", messages.SUCCESS)

    @action(description="Acknowledge", permissions=["change"])
    def acknowledge_one(self, request: HttpRequest, object_id: str) -> Any:
        from django.shortcuts import redirect

        alert = self.get_object(request, object_id)
        if alert is not None and alert_acknowledge(alert=alert, user=request.user):
            self.message_user(request, "Alert acknowledged.", messages.SUCCESS)
        return redirect(request.META.get("HTTP_REFERER") or "..")
