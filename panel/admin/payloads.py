"""The test payload library (with replay), the audit of panel sends, staff scopes, and the themed user admin."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.contrib.auth.admin import GroupAdmin as BaseGroupAdmin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.contrib.auth.models import Group, User
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.safestring import SafeString
from unfold.admin import StackedInline
from unfold.decorators import action, display
from unfold.forms import AdminPasswordChangeForm, UserChangeForm, UserCreationForm
from unfold.widgets import UnfoldAdminRadioSelectWidget, UnfoldAdminSelectWidget

from commands.models import Command
from panel.admin.base import (
    BigTableMixin,
    ReadOnlyMixin,
    ScopedAdmin,
    TenantFilter,
    pretty_json,
    table_html,
)
from panel.models import LibraryPayload, PanelSend, StaffScope
from panel.payloads import COMMAND, FLAT_COMMAND, POLICY_SNAPSHOT, validate_request
from panel.scoping import scope_queryset, sees_all_tenants, visible_tenants
from panel.services import PanelError, payload_replay
from tenancy.models import Tenant

VALIDATED_KINDS = {
    LibraryPayload.Kind.COMMAND: COMMAND,
    LibraryPayload.Kind.POLICY_SNAPSHOT: POLICY_SNAPSHOT,
    LibraryPayload.Kind.FLAT_COMMAND: FLAT_COMMAND,
}


class ReplayForm(forms.Form):
    tenant = forms.ModelChoiceField(queryset=Tenant.objects.none(), widget=UnfoldAdminSelectWidget, empty_label=None)
    mode = forms.ChoiceField(
        choices=[
            ("fresh", "Fresh: new idempotency key, request id, correlation id (and command id); UTC timestamps now"),
            ("same", "Same key: resend the last send for this tenant, to see de-duplication"),
        ],
        initial="fresh",
        widget=UnfoldAdminRadioSelectWidget,
    )

    def __init__(self, *args: Any, user: Any, payload: LibraryPayload, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        tenants = visible_tenants(user)
        if payload.tenant_id is not None:
            tenants = tenants.filter(pk=payload.tenant_id)
        self.fields["tenant"].queryset = tenants
        body_tenant = (payload.body or {}).get("meta", {}).get("tenant_id") if isinstance(payload.body, dict) else None
        initial = tenants.filter(tenant_id=body_tenant).first() or tenants.first()
        if initial is not None:
            self.fields["tenant"].initial = initial.pk


@admin.register(LibraryPayload)
class LibraryPayloadAdmin(ScopedAdmin):
    list_display = ("title", "kind", "method_path", "owner", "builtin")
    list_filter = ("kind", "builtin")
    search_fields = ("slug", "title")
    readonly_fields = ("builtin", "validation")
    fieldsets = (
        (None, {"fields": ("title", "slug", "kind", "description", "tenant", "builtin")}),
        ("Request", {"fields": ("body", "account_login", "validation")}),
    )
    prepopulated_fields = {"slug": ("title",)}
    autocomplete_fields = ("tenant",)
    actions_detail = ("replay",)
    actions_row = ("replay",)

    def get_form(
        self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any
    ) -> type[forms.ModelForm]:
        form = super().get_form(request, obj, change=change, **kwargs)
        if "tenant" in form.base_fields and not sees_all_tenants(request.user):
            # A scoped operator's payload belongs to one of their tenants: a shared one would show their
            # accounts to every tenant's staff.
            form.base_fields["tenant"].required = True
        return form

    def has_delete_permission(self, request: HttpRequest, obj: LibraryPayload | None = None) -> bool:
        if obj is not None and obj.builtin:
            return False
        return super().has_delete_permission(request, obj)

    def has_replay_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.has_perm("panel.replay_payload")

    @display(description="request")
    def method_path(self, obj: LibraryPayload) -> str:
        return f"{obj.method} {obj.path}"

    @display(description="tenant")
    def owner(self, obj: LibraryPayload) -> str:
        return obj.tenant.tenant_id if obj.tenant_id else "shared example"

    @display(description="validation by the API's serializers")
    def validation(self, obj: LibraryPayload) -> SafeString | str:
        request_type = VALIDATED_KINDS.get(obj.kind)
        if request_type is None:
            return "Not an inbound body (an outbound report or a GET): nothing to validate."
        errors = validate_request(request_type, obj.body)
        if not errors:
            return "Valid: the intake would accept its shape."
        return table_html(["field", "message"], [[e["field"], e["message"]] for e in errors])

    @action(description="Replay", icon="replay", permissions=["replay"])
    def replay(self, request: HttpRequest, object_id: str) -> HttpResponse:
        payload = self.get_object(request, object_id)
        if payload is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        form = ReplayForm(request.POST or None, user=request.user, payload=payload)
        result = send = None
        error = ""
        if request.method == "POST" and form.is_valid():
            try:
                result, send = payload_replay(
                    user=request.user,
                    payload=payload,
                    tenant=form.cleaned_data["tenant"],
                    same_key=form.cleaned_data["mode"] == "same",
                )
            except PanelError as exc:
                error = str(exc)
            except PermissionDenied:
                error = "You may not act for this tenant."
        command = None
        if result is not None and isinstance(result.body, dict) and result.body.get("command_id") and send is not None:
            command = Command.objects.filter(tenant=send.tenant, command_id=result.body["command_id"]).first()
        context = {
            **self.admin_site.each_context(request),
            "title": f"Replay: {payload.title}",
            "opts": self.opts,
            "payload": payload,
            "payload_json": pretty_json(payload.body) if payload.body is not None else "",
            "form": form,
            "result": result,
            "send": send,
            "error": error,
            "command_url": reverse("admin:commands_command_change", args=[command.pk]) if command else None,
            "change_url": reverse("admin:panel_librarypayload_change", args=[payload.pk]),
            "recent_sends": scope_queryset(PanelSend.objects.filter(payload=payload), request.user).select_related(
                "tenant"
            )[:10],
        }
        return TemplateResponse(request, "panel/replay.html", context)


@admin.register(PanelSend)
class PanelSendAdmin(BigTableMixin, ReadOnlyMixin, ScopedAdmin):
    list_display = ("sent_at", "username", "origin", "tenant", "method", "path", "status", "replayed", "payload")
    list_select_related = ("tenant", "payload")
    list_filter = (TenantFilter, "origin", "replayed")
    search_fields = ("username", "idempotency_key__exact")
    ordering = ("-sent_at", "-id")
    readonly_fields = (
        "sent_at",
        "username",
        "origin",
        "tenant",
        "payload",
        "method",
        "path",
        "idempotency_key",
        "status",
        "replayed",
        "headers_json",
        "body_json",
        "response_json",
    )
    fields = readonly_fields

    @display(description="request headers")
    def headers_json(self, obj: PanelSend) -> SafeString:
        return pretty_json(obj.headers)

    @display(description="request body")
    def body_json(self, obj: PanelSend) -> SafeString:
        return pretty_json(obj.body)

    @display(description="response body")
    def response_json(self, obj: PanelSend) -> SafeString:
        return pretty_json(obj.response)


class StaffScopeForm(forms.ModelForm):
    class Meta:
        model = StaffScope
        fields = ("user", "all_tenants", "tenants")

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if cleaned.get("all_tenants") and cleaned.get("tenants"):
            raise forms.ValidationError("Choose either every tenant or a list of tenants, not both.")
        return cleaned


@admin.register(StaffScope)
class StaffScopeAdmin(ScopedAdmin):
    form = StaffScopeForm
    list_display = ("user", "all_tenants", "tenant_list", "updated_at")
    list_select_related = ("user",)
    search_fields = ("user__username",)
    filter_horizontal = ("tenants",)
    autocomplete_fields = ("user",)

    def get_queryset(self, request: HttpRequest) -> Any:
        return super().get_queryset(request).prefetch_related("tenants")

    @display(description="tenants")
    def tenant_list(self, obj: StaffScope) -> str:
        return "every tenant" if obj.all_tenants else ", ".join(t.tenant_id for t in obj.tenants.all()) or "none"

    def save_model(self, request: HttpRequest, obj: StaffScope, form: forms.ModelForm, change: bool) -> None:
        from django.utils import timezone

        obj.updated_at = timezone.now()
        super().save_model(request, obj, form, change)


class StaffScopeInline(StackedInline):
    model = StaffScope
    form = StaffScopeForm
    fields = ("all_tenants", "tenants")
    filter_horizontal = ("tenants",)
    can_delete = True
    verbose_name = "tenant scope (staff without one see no tenant's rows)"
    max_num = 1


admin.site.unregister(User)
admin.site.unregister(Group)


@admin.register(User)
class UserAdmin(BaseUserAdmin, ScopedAdmin):
    form = UserChangeForm
    add_form = UserCreationForm
    change_password_form = AdminPasswordChangeForm
    inlines = (StaffScopeInline,)
    list_display = ("username", "email", "is_staff", "is_superuser", "group_list", "is_active", "last_login")

    def get_queryset(self, request: HttpRequest) -> Any:
        return super().get_queryset(request).prefetch_related("groups")

    @display(description="groups")
    def group_list(self, obj: User) -> str:
        return ", ".join(group.name for group in obj.groups.all())


@admin.register(Group)
class GroupAdmin(BaseGroupAdmin, ScopedAdmin):
    pass


def _rescope_django_q() -> None:
    """django-q2's task tables name commands of every tenant: themed, and shown only to all-tenant users."""
    from django_q import admin as q_admin
    from django_q.models import Failure, OrmQ, Schedule, Success

    for model, base in (
        (Schedule, q_admin.ScheduleAdmin),
        (Success, q_admin.TaskAdmin),
        (Failure, q_admin.FailAdmin),
        (OrmQ, q_admin.QueueAdmin),
    ):
        if admin.site.is_registered(model):
            admin.site.unregister(model)
            admin.site.register(model, type(base.__name__, (base, ScopedAdmin), {"show_full_result_count": False}))


_rescope_django_q()
