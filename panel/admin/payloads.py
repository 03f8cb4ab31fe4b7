"""The test payload library, with its validation and replay, and the audit of every send from the panel."""

from __future__ import annotations

from typing import Any, cast

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.safestring import SafeString
from unfold.decorators import action, display
from unfold.widgets import UnfoldAdminRadioSelectWidget, UnfoldAdminSelectWidget

from commands.models import Command
from panel.admin.base import BigTableMixin, ReadOnlyMixin, ScopedAdmin, TenantFilter, pretty_json, table_html
from panel.effects import send_effect
from panel.models import LibraryPayload, PanelSend
from panel.payloads import COMMAND, FLAT_COMMAND, POLICY_SNAPSHOT, validate_request
from panel.scoping import scope_queryset, sees_all_tenants, visible_tenants
from panel.services import PanelError, payload_replay
from tenancy.models import Tenant

VALIDATED_KINDS: dict[str, str] = {
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
        # self.fields holds deep copies of the declared fields: "tenant" is the ModelChoiceField above.
        cast("forms.ModelChoiceField[Tenant]", self.fields["tenant"]).queryset = tenants
        body_tenant = (payload.body or {}).get("meta", {}).get("tenant_id") if isinstance(payload.body, dict) else None
        initial = tenants.filter(tenant_id=body_tenant).first() or tenants.first()
        if initial is not None:
            self.fields["tenant"].initial = initial.pk


@admin.register(LibraryPayload)
class LibraryPayloadAdmin(ScopedAdmin[LibraryPayload]):
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
        self, request: HttpRequest, obj: LibraryPayload | None = None, change: bool = False, **kwargs: Any
    ) -> type[forms.ModelForm[LibraryPayload]]:
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

    def has_replay_permission(self, request: HttpRequest, obj: LibraryPayload | None = None) -> bool:
        return request.user.has_perm("panel.replay_payload")

    @display(description="request")
    def method_path(self, obj: LibraryPayload) -> str:
        return f"{obj.method} {obj.path}"

    @display(description="tenant")
    def owner(self, obj: LibraryPayload) -> str:
        return obj.tenant.tenant_id if obj.tenant is not None else "shared example"

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
        effect = send_effect(method=payload.method, path=payload.path, body=payload.body)
        confirm = None
        if request.method == "POST" and form.is_valid() and effect is not None and request.POST.get("confirmed") != "1":
            # Nothing is sent until the operator has seen the account, the environment and the effect.
            confirm = effect
        elif request.method == "POST" and form.is_valid():
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
            "confirm": confirm,
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
class PanelSendAdmin(BigTableMixin, ReadOnlyMixin, ScopedAdmin[PanelSend]):
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
