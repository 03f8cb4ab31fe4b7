"""The callback outbox: where each report to Laravel stands, every attempt, and a re-send for dead letters."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.safestring import SafeString
from unfold.contrib.filters.admin import ChoicesDropdownFilter, RangeDateTimeFilter
from unfold.decorators import action, display

from callbacks.models import CallbackAttempt, CallbackDelivery, DeliveryStatus
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
from panel.formatting import utc
from panel.services import callback_resend_for


class OverdueFilter(admin.SimpleListFilter):
    """Rows still owed to Laravel whose next try is already past: the outbox is not draining."""

    title = "delivery"
    parameter_name = "due"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]) -> list[tuple[str, str]]:
        return [("overdue", "Overdue (open, next try in the past)"), ("dead", "Dead letters")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[CallbackDelivery]) -> QuerySet[CallbackDelivery]:
        from django.utils import timezone

        if self.value() == "overdue":
            return queryset.filter(status=DeliveryStatus.PENDING, next_attempt_at__lt=timezone.now())
        if self.value() == "dead":
            return queryset.filter(status=DeliveryStatus.DEAD)
        return queryset


@admin.register(CallbackDelivery)
class CallbackDeliveryAdmin(BigTableMixin, ReadOnlyMixin, ScopedAdmin[CallbackDelivery]):
    list_display = (
        "id",
        "request_type",
        "tenant",
        "account",
        "status_label",
        "attempts",
        "next_try",
        "last_status_code",
        "age_column",
    )
    list_select_related = ("tenant", "account")
    list_filter = (
        TenantFilter,
        OverdueFilter,
        ("status", ChoicesDropdownFilter),
        ("request_type", ChoicesDropdownFilter),
        ("created_at", RangeDateTimeFilter),
    )
    list_filter_submit = True
    search_fields = ("idempotency_key__exact", "correlation_id__exact")
    search_help_text = "Exact idempotency key or correlation id."
    ordering = ("-created_at", "-id")
    sortable_by = ("age_column",)
    actions = ("resend_selected", "export_csv")
    actions_detail = ("resend_detail",)
    export_fields = (
        "id",
        "tenant__tenant_id",
        "account__login",
        "request_type",
        "status",
        "attempts",
        "idempotency_key",
        "correlation_id",
        "created_at",
        "last_attempt_at",
        "last_status_code",
        "delivered_at",
        "dead_at",
    )
    SUMMARY = (
        "request_type",
        "tenant",
        "account",
        "status",
        "attempts",
        "next_attempt_at",
        "last_status_code",
        "last_error",
        "source_link",
    )
    TIMES = ("created_at", "window_started_at", "first_attempt_at", "last_attempt_at", "delivered_at", "dead_at")
    TRACE = ("path", "request_id", "idempotency_key", "correlation_id")
    readonly_fields = (*SUMMARY, *TIMES, *TRACE, "attempt_table", "envelope_json")
    fieldsets = (
        ("Delivery", {"fields": SUMMARY}),
        ("Times (UTC)", {"fields": TIMES}),
        ("Tracing", {"fields": TRACE}),
        ("Attempts", {"fields": ("attempt_table",)}),
        ("Envelope sent (only meta.sent_at_utc changes between attempts)", {"fields": ("envelope_json",)}),
    )

    @display(description="status", ordering="status", label=STATE_LABELS)
    def status_label(self, obj: CallbackDelivery) -> str:
        return obj.status

    @display(description="next try")
    def next_try(self, obj: CallbackDelivery) -> str:
        if not obj.is_open or obj.next_attempt_at is None:
            return "—"
        return utc(obj.next_attempt_at)

    @display(description="age", ordering="created_at")
    def age_column(self, obj: CallbackDelivery) -> str:
        return age(obj.created_at)

    @display(description="raised by")
    def source_link(self, obj: CallbackDelivery) -> SafeString | str:
        from commands.models import Command
        from policies.models import ProtectiveAction

        models: dict[str, type[Command] | type[ProtectiveAction]] = {
            "command": Command,
            "protective_action": ProtectiveAction,
        }
        model = models.get(obj.source_kind)
        if model is None or not obj.source_id.isdigit():
            return f"{obj.source_kind or '—'} {obj.source_id}".strip()
        return admin_link(model.objects.filter(pk=int(obj.source_id)).first(), f"{obj.source_kind} {obj.source_id}")

    @display(description="attempts")
    def attempt_table(self, obj: CallbackDelivery) -> SafeString:
        rows = [
            [
                a.number,
                a.at,
                a.status_code,
                a.outcome,
                a.duration_ms,
                a.retry_after_seconds,
                a.next_attempt_at,
                a.error or None,
                a.response_snippet or None,
            ]
            for a in obj.attempt_log.all()
        ]
        return table_html(["#", "at", "HTTP", "outcome", "ms", "Retry-After s", "next try", "error", "response"], rows)

    @display(description="envelope")
    def envelope_json(self, obj: CallbackDelivery) -> SafeString:
        return pretty_json(obj.envelope)

    # --- re-send ----------------------------------------------------------------------------

    def has_resend_permission(self, request: HttpRequest, object_id: str | None = None) -> bool:
        """On a delivery's page, offered once it has ended (dead or delivered): an open one is on its way."""
        if not request.user.has_perm("panel.resend_callback"):
            return False
        if object_id is None:
            return True
        status = (
            CallbackDelivery.objects.filter(pk=object_id).values_list("status", flat=True).first()
            if object_id.isdigit()
            else None
        )
        return status in (DeliveryStatus.DEAD, DeliveryStatus.DELIVERED)

    @admin.action(description="Re-send selected deliveries now", permissions=["resend"])
    def resend_selected(self, request: HttpRequest, queryset: QuerySet[CallbackDelivery]) -> None:
        resent = sum(
            1
            for delivery in queryset.select_related("tenant")[:500]
            if callback_resend_for(user=request.user, delivery=delivery).status == DeliveryStatus.PENDING
        )
        self.message_user(request, f"{resent} delivery(ies) will be sent again now, in a new retry window.")

    @action(description="Re-send", icon="send", permissions=["resend"])
    def resend_detail(self, request: HttpRequest, object_id: str) -> HttpResponse:
        delivery = self.get_object(request, object_id)
        if delivery is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)

        def run() -> HttpResponse:
            row = callback_resend_for(user=request.user, delivery=delivery)
            if row.status == DeliveryStatus.PENDING:
                self.message_user(request, "Queued for delivery now, in a new retry window.", messages.SUCCESS)
            else:
                self.message_user(
                    request, "A delivery process holds it right now; it finishes on its own.", messages.WARNING
                )
            return redirect(reverse("admin:callbacks_callbackdelivery_change", args=[delivery.pk]))

        return confirm_then(
            self,
            request,
            obj=delivery,
            title=f"Re-send delivery {delivery.pk}?",
            message=(
                f"It is {delivery.status} after {delivery.attempts} attempt(s). Laravel receives the same envelope "
                "with the same idempotency key, so it can de-duplicate a report it already has."
            ),
            button="Re-send now",
            run=run,
        )


@admin.register(CallbackAttempt)
class CallbackAttemptAdmin(BigTableMixin, ReadOnlyMixin, ScopedAdmin[CallbackAttempt]):
    list_display = ("at", "delivery_link", "number", "status_code", "outcome_label", "duration_ms", "error_short")
    list_select_related = ("delivery",)
    list_filter = (TenantFilter, ("outcome", ChoicesDropdownFilter), ("at", RangeDateTimeFilter))
    list_filter_submit = True
    search_fields = ("delivery__idempotency_key__exact",)
    search_help_text = "Exact idempotency key of the delivery."
    ordering = ("-at",)
    sortable_by = ("at",)
    readonly_fields = (
        "delivery_link",
        "number",
        "at",
        "status_code",
        "outcome",
        "duration_ms",
        "retry_after_seconds",
        "next_attempt_at",
        "error",
        "response_snippet",
    )
    fields = readonly_fields

    @display(description="delivery")
    def delivery_link(self, obj: CallbackAttempt) -> SafeString | str:
        return admin_link(obj.delivery, f"{obj.delivery.request_type} {obj.delivery.idempotency_key}")

    @display(description="outcome", label={"delivered": "success", "retry": "warning", "dead": "danger"})
    def outcome_label(self, obj: CallbackAttempt) -> str:
        return obj.outcome

    @display(description="error")
    def error_short(self, obj: CallbackAttempt) -> str:
        return obj.error[:80]
