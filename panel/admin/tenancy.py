"""Tenants and API tokens: a created token is shown once, then only its prefix; revoking is one click."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypedDict

from django import forms
from django.contrib import admin, messages
from django.db.models import Count, QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from unfold.decorators import action, display

from panel.admin.base import ScopedAdmin, TenantFilter, confirm_then
from policies.models import TradingAccount
from risk.kill_switch import Switch, accounts_to_halt, halted_by_tenant
from tenancy.auth import token_cache
from tenancy.models import ApiToken, Tenant, new_token_value

if TYPE_CHECKING:
    # Annotations only (a dev dependency): nothing from django-stubs-ext is imported at run time.
    from django_stubs_ext import WithAnnotations


class _AccountCount(TypedDict):
    account_count: int


def _has(accounts_of: Callable[[Tenant], QuerySet[TradingAccount]], object_id: str) -> bool:
    return object_id.isdigit() and accounts_of(Tenant(pk=int(object_id))).exists()


@admin.register(Tenant)
class TenantAdmin(ScopedAdmin[Tenant]):
    list_display = ("tenant_id", "name", "accounts", "created_at")
    ordering = ("tenant_id",)
    search_fields = ("tenant_id", "name")
    readonly_fields = ("created_at",)
    fields = ("tenant_id", "name", "created_at")
    actions_detail = ("switch_halt", "switch_resume")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Tenant]:
        return super().get_queryset(request).annotate(account_count=Count("accounts"))

    def get_readonly_fields(self, request: HttpRequest, obj: Tenant | None = None) -> tuple[str, ...]:
        # tenant_id is what Laravel sends: renaming it would orphan every token and account.
        return ("tenant_id", "created_at") if obj is not None else ("created_at",)

    def has_delete_permission(self, request: HttpRequest, obj: Tenant | None = None) -> bool:
        return False

    # --- kill switches: halt every account of the tenant, or enable again those the halt disabled

    def has_switch_halt_permission(self, request: HttpRequest, object_id: str | None = None) -> bool:
        may = request.user.has_perm("panel.use_kill_switch")
        return may and (
            object_id is None or (str(object_id).isdigit() and accounts_to_halt(Tenant(pk=int(object_id))).exists())
        )

    def has_switch_resume_permission(self, request: HttpRequest, object_id: str | None = None) -> bool:
        may = request.user.has_perm("panel.use_kill_switch")
        return may and (
            object_id is None or (str(object_id).isdigit() and halted_by_tenant(Tenant(pk=int(object_id))).exists())
        )

    @action(description="Halt all trading", icon="front_hand", url_path="halt", permissions=["switch_halt"])
    def switch_halt(self, request: HttpRequest, object_id: str) -> HttpResponse:
        return redirect(reverse("panel:kill-switch", args=["tenant", object_id, Switch.HALT_TENANT]))

    @action(description="Enable trading", icon="check_circle", url_path="resume", permissions=["switch_resume"])
    def switch_resume(self, request: HttpRequest, object_id: str) -> HttpResponse:
        return redirect(reverse("panel:kill-switch", args=["tenant", object_id, Switch.RESUME_TENANT]))

    @display(description="accounts", ordering="account_count")
    def accounts(self, obj: WithAnnotations[Tenant, _AccountCount]) -> int:
        return obj.account_count


class ApiTokenForm(forms.ModelForm):
    class Meta:
        model = ApiToken
        fields = ("name", "tenants")


@admin.register(ApiToken)
class ApiTokenAdmin(ScopedAdmin[ApiToken]):
    form = ApiTokenForm
    list_display = ("name", "prefix", "tenant_list", "active", "created_at", "last_used_at", "revoked_at")
    list_filter = (TenantFilter,)
    search_fields = ("name", "prefix")
    ordering = ("-created_at",)
    actions = ("revoke_selected",)
    actions_detail = ("revoke_detail",)
    filter_horizontal = ()

    def get_queryset(self, request: HttpRequest) -> QuerySet[ApiToken]:
        return super().get_queryset(request).prefetch_related("tenants")

    def get_fields(self, request: HttpRequest, obj: ApiToken | None = None) -> tuple[str, ...]:
        if obj is None:
            return ("name", "tenants")
        return ("name", "prefix", "tenant_list", "active", "created_at", "last_used_at", "revoked_at")

    def get_readonly_fields(self, request: HttpRequest, obj: ApiToken | None = None) -> tuple[str, ...]:
        if obj is None:
            return ()
        return ("name", "prefix", "tenant_list", "active", "created_at", "last_used_at", "revoked_at")

    def has_delete_permission(self, request: HttpRequest, obj: ApiToken | None = None) -> bool:
        # Revoked tokens stay, so "who was this token" can still be answered from the logs.
        return False

    def has_revoke_permission(self, request: HttpRequest, obj: ApiToken | None = None) -> bool:
        return request.user.has_perm("tenancy.change_apitoken")

    @display(description="tenants")
    def tenant_list(self, obj: ApiToken) -> str:
        return ", ".join(tenant.tenant_id for tenant in obj.tenants.all())

    @display(description="active", boolean=True)
    def active(self, obj: ApiToken) -> bool:
        return obj.is_active

    def save_model(self, request: HttpRequest, obj: ApiToken, form: forms.ModelForm, change: bool) -> None:
        if not change:
            raw = new_token_value()
            obj.set_raw(raw)
            # Kept on the request only, for the one response that shows it: never stored, logged or put in a cookie.
            request._panel_new_token = raw  # type: ignore[attr-defined]  # HttpRequest declares no such attribute
        super().save_model(request, obj, form, change)

    def response_add(self, request: HttpRequest, obj: ApiToken, post_url_continue: str | None = None) -> HttpResponse:
        raw = getattr(request, "_panel_new_token", None)
        if raw is None:
            return super().response_add(request, obj, post_url_continue)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Token {obj.name} created",
            "opts": self.opts,
            "token": obj,
            "raw": raw,
            "tenants": [tenant.tenant_id for tenant in obj.tenants.all()],
            "change_url": reverse("admin:tenancy_apitoken_change", args=[obj.pk]),
        }
        return TemplateResponse(request, "panel/token_created.html", context)

    @admin.action(description="Revoke selected tokens", permissions=["revoke"])
    def revoke_selected(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        revoked = 0
        for token in queryset.filter(revoked_at__isnull=True):
            token.revoke()
            revoked += 1
        token_cache.clear()
        self.message_user(request, f"Revoked {revoked} token(s); requests with them now get 401.")

    @action(description="Revoke", icon="block", permissions=["revoke"])
    def revoke_detail(self, request: HttpRequest, object_id: str) -> HttpResponse:
        token = self.get_object(request, object_id)
        if token is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)

        def run() -> HttpResponse:
            token.revoke()
            # This process forgets it now; other processes within API_TOKEN_CACHE_SECONDS.
            token_cache.clear()
            self.message_user(request, f"Token {token} revoked.", messages.SUCCESS)
            return redirect(reverse("admin:tenancy_apitoken_change", args=[token.pk]))

        return confirm_then(
            self,
            request,
            obj=token,
            title=f"Revoke {token}?",
            message="Every request with this token is refused with 401 from now on. This cannot be undone.",
            button="Revoke the token",
            run=run,
        )
