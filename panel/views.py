"""The panel's own pages: payload builder (preview and send), environment, command catalogue.

Each view is wrapped in the admin site's login and staff check (panel.urls) and checks one
permission itself; every tenant a request names is checked against the user's scope.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseClientRedirect
from django_htmx.middleware import HtmxDetails

from alerts.models import Alert
from alerts.services import alert_acknowledge
from commands.models import Command
from panel import fieldspec
from panel.catalogue import catalogue_entries
from panel.dashboard import dashboard_data
from panel.effects import send_effect
from panel.environment import environment_report
from panel.navigation import environment_label
from panel.payloads import (
    PATHS,
    REQUEST_TYPES,
    REQUIRED_HEADERS,
    SAMPLE_ACCOUNT,
    SAMPLE_COMMAND_FIELDS,
    SAMPLE_POLICY_FIELDS,
    SYNC_REQUEST,
    build_request,
)
from panel.scoping import scope_queryset, visible_tenants
from panel.services import ACCOUNT_SWITCHES, TENANT_SWITCHES, PanelError, kill_switch_use, panel_send
from policies.models import TradingAccount, on_server
from risk.kill_switch import KillSwitchRefused, Switch, accounts_to_halt, effect_of, halted_by_tenant
from tenancy.models import Tenant

# The headers a send may carry besides Authorization (which the panel's own principal replaces).
SENDABLE_HEADERS = ("X-Idempotency-Key", "X-Correlation-ID", "X-Protocol-Version")
_ACCOUNT_PATH = re.compile(r"^/api/v1/mt5/accounts/\d{1,19}$")
BUILDER_ACCOUNT_LIMIT = 1000


def requires(permission: str) -> Callable[[Callable[..., HttpResponse]], Callable[..., HttpResponse]]:
    def decorate(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if not request.user.has_perm(permission):
                raise PermissionDenied
            return view(request, *args, **kwargs)

        wrapped.__name__ = view.__name__
        wrapped.__doc__ = view.__doc__
        return wrapped

    return decorate


def _page(request: HttpRequest, template: str, title: str, **context: Any) -> TemplateResponse:
    return TemplateResponse(request, template, {**admin.site.each_context(request), "title": title, **context})


def _tenant(request: HttpRequest, tenant_id: Any) -> Tenant:
    """The named tenant, if the user may see it; 403 otherwise (an unknown one looks the same)."""
    tenant = visible_tenants(request.user).filter(tenant_id=str(tenant_id or "")).first()
    if tenant is None:
        raise PermissionDenied("You may not act for this tenant.")
    return tenant


def _json_body(request: HttpRequest) -> dict[str, Any]:
    try:
        data = json.loads(request.body or b"{}")
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise PermissionDenied("Send a JSON object.")
    return data


def _object(data: dict[str, Any], name: str) -> dict[str, Any] | None:
    """`data[name]` when it is a JSON object, else None."""
    value = data.get(name)
    return value if isinstance(value, dict) else None


# --- Payload builder ------------------------------------------------------------------------------


@require_GET
@requires("panel.use_builder")
def builder(request: HttpRequest) -> TemplateResponse:
    tenants = list(visible_tenants(request.user).values_list("tenant_id", flat=True))
    accounts = list(
        scope_queryset(TradingAccount.objects.all(), request.user)
        .select_related("tenant")
        .order_by("-created_at")
        .values("tenant__tenant_id", "login", "server", "trading_account_id")[:BUILDER_ACCOUNT_LIMIT]
    )
    spec = {
        "common": fieldspec.command_common_spec(),
        "commands": {ct: fieldspec.command_specific_spec(ct) for ct in fieldspec.COMMAND_TYPES},
        "policy": fieldspec.policy_spec(),
        "samples": {"commands": SAMPLE_COMMAND_FIELDS, "policy": SAMPLE_POLICY_FIELDS, "account": SAMPLE_ACCOUNT},
    }
    # Opened without a choice, the builder shows a read-only request (a GET of an account), and a command
    # type that changes nothing on MT5: a real trade is never one click away.
    initial = {
        "request_type": request.GET.get("request_type")
        if request.GET.get("request_type") in REQUEST_TYPES
        else SYNC_REQUEST,
        "command_type": request.GET.get("command_type")
        if request.GET.get("command_type") in fieldspec.COMMAND_TYPES
        else "sync_account",
        "tenant_id": request.GET.get("tenant")
        if request.GET.get("tenant") in tenants
        else (tenants[0] if tenants else ""),
    }
    return _page(
        request,
        "panel/builder.html",
        "Payload builder",
        builder_config={
            "spec": spec,
            "tenants": tenants,
            "accounts": [
                {
                    "tenant_id": a["tenant__tenant_id"],
                    "login": a["login"],
                    "server": a["server"],
                    "trading_account_id": a["trading_account_id"],
                }
                for a in accounts
            ],
            "request_types": REQUEST_TYPES,
            "command_types": fieldspec.COMMAND_TYPES,
            "initial": initial,
            "preview_url": reverse("panel:builder-preview"),
            "send_url": reverse("panel:builder-send"),
            "can_send": request.user.has_perm("panel.send_payload"),
        },
        headers=REQUIRED_HEADERS,
        bridge_url=settings.PYTHON_BRIDGE_URL,
    )


@require_POST
@requires("panel.use_builder")
def builder_preview(request: HttpRequest) -> JsonResponse:
    """Build and validate a request from the builder's choices: the same request models as the intake."""
    data = _json_body(request)
    tenant = _tenant(request, data.get("tenant_id"))
    request_type = str(data.get("request_type") or "")
    command_type = data.get("command_type")
    if request_type not in REQUEST_TYPES or (
        request_type in ("command", "flat_command") and command_type not in fieldspec.COMMAND_TYPES
    ):
        return JsonResponse({"error": "Pick a request type and a command type."}, status=400)
    account = _object(data, "account") or {}
    built = build_request(
        request_type=request_type,
        tenant_id=tenant.tenant_id,
        account=account,
        command_type=command_type,
        fields=_object(data, "fields") or {},
        ids=_object(data, "ids"),
        context=_object(data, "context"),
    )
    result = built.as_dict()
    result["warnings"] = _account_warnings(request_type, tenant, account)
    return JsonResponse(result)


def _account_warnings(request_type: str, tenant: Tenant, account: dict[str, Any]) -> list[str]:
    login = account.get("account_login")
    if request_type == "policy_snapshot" or not isinstance(login, int):
        return []
    registered = TradingAccount.objects.filter(tenant=tenant, login=login)
    if request_type == "command" and account.get("server"):
        registered = on_server(registered, str(account["server"]))
    if registered.exists():
        return []
    # Say nothing about other tenants: only that this one has no such account.
    return [f"Account {login} is not registered for {tenant.tenant_id}: the API will answer 404 or 403."]


@require_POST
@requires("panel.send_payload")
def builder_send(request: HttpRequest) -> JsonResponse:
    """Send what the builder shows through the real API view, as `panel:<username>` for that one tenant."""
    data = _json_body(request)
    tenant = _tenant(request, data.get("tenant_id"))
    method = str(data.get("method") or "POST").upper()
    path = str(data.get("path") or "")
    allowed = (method == "POST" and path in PATHS.values()) or (method == "GET" and _ACCOUNT_PATH.match(path))
    if not allowed:
        return JsonResponse(
            {"error": "The builder sends only to the commands, policies and account paths."}, status=400
        )
    effect = send_effect(method=method, path=path, body=data.get("body"))
    if effect is not None and data.get("confirmed") is not True:
        # Nothing is sent until the operator has seen the account, the environment and the effect.
        return JsonResponse({"confirm": effect.as_dict()}, status=428)
    raw_headers = _object(data, "headers") or {}
    headers = {name: str(raw_headers[name]) for name in SENDABLE_HEADERS if raw_headers.get(name)}
    try:
        result, send = panel_send(
            user=request.user, tenant=tenant, method=method, path=path, body=data.get("body"), headers=headers
        )
    except PanelError as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    answer = result.as_dict()
    answer["send_url"] = reverse("admin:panel_panelsend_change", args=[send.pk])
    command_id = result.body.get("command_id") if isinstance(result.body, dict) else None
    command = Command.objects.filter(tenant=tenant, command_id=command_id).first() if command_id else None
    answer["command_url"] = reverse("admin:commands_command_change", args=[command.pk]) if command else None
    return JsonResponse(answer)


# --- Styled error pages -------------------------------------------------------------------------------

ERROR_TITLES = {403: "You may not do this", 404: "Not found"}


def error_page(request: HttpRequest, status: int, exception: Exception | None = None) -> HttpResponse:
    """403 and 404 inside the panel's own chrome (the wiring routes /admin/ here, the API to problem JSON)."""
    message = str(exception) if exception is not None and str(exception) and status == 403 else ""
    response = TemplateResponse(
        request,
        "panel/error.html",
        {
            **admin.site.each_context(request),
            "title": ERROR_TITLES[status],
            "status": status,
            "message": message or "Your role does not allow this page or action. Ask an operator or an administrator.",
        },
        status=status,
    )
    return response.render()


# --- The live dashboard and its alerts --------------------------------------------------------------


class HtmxHttpRequest(HttpRequest):
    """A request through django-htmx's middleware (django-htmx's own recipe for type checkers)."""

    htmx: HtmxDetails


def dashboard_live(request: HtmxHttpRequest) -> HttpResponse:
    """The first screen's figures as a fragment, fetched by the dashboard's htmx poll every few seconds.

    Not an htmx request (someone opened the URL): the dashboard itself. Signed out meanwhile: htmx
    is told to load the login page as a whole page instead of swapping it into the dashboard.
    """
    login = f"{reverse('admin:login')}?next={reverse('admin:index')}"
    if not (request.user.is_active and request.user.is_staff):
        return HttpResponseClientRedirect(login) if request.htmx else redirect(login)
    if not request.htmx:
        return redirect("admin:index")
    response = TemplateResponse(request, "panel/dashboard/live.html", {"d": dashboard_data(request.user)})
    response["Cache-Control"] = "no-store"
    return response


@require_POST
@requires("alerts.change_alert")
def alert_acknowledge_view(request: HttpRequest, pk: int) -> HttpResponse:
    alert = get_object_or_404(scope_queryset(Alert.objects.all(), request.user), pk=pk)
    if alert_acknowledge(alert=alert, user=request.user):
        messages.success(request, f"Alert acknowledged: {alert.title}")
    else:
        messages.info(request, "That alert was acknowledged already.")
    return redirect("admin:index")


# --- Kill switches ----------------------------------------------------------------------------------


class KillSwitchForm(forms.Form):
    reason = forms.CharField(
        min_length=3,
        max_length=500,
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "Why: what you saw, the ticket, who asked"}),
        help_text="Recorded with your name on the kill switch log and on every command it raises.",
    )


def _switch_target(request: HttpRequest, kind: str, pk: int) -> tuple[TradingAccount | None, Tenant]:
    if kind == "account":
        account = get_object_or_404(
            scope_queryset(TradingAccount.objects.select_related("tenant", "risk"), request.user), pk=pk
        )
        return account, account.tenant
    return None, get_object_or_404(visible_tenants(request.user), pk=pk)


@requires("panel.use_kill_switch")
def kill_switch(request: HttpRequest, kind: str, pk: int, switch: str) -> HttpResponse:
    """A kill switch's confirmation (GET) and its use (POST with a reason): nothing is sent on GET."""
    account, tenant = _switch_target(request, kind, pk)
    allowed = ACCOUNT_SWITCHES if account is not None else TENANT_SWITCHES
    if switch not in allowed:
        raise Http404("No such switch.")
    back = (
        reverse("admin:policies_tradingaccount_change", args=[account.pk])
        if account is not None
        else reverse("admin:tenancy_tenant_change", args=[tenant.pk])
    )
    form = KillSwitchForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            use = kill_switch_use(
                user=request.user, switch=switch, reason=form.cleaned_data["reason"], account=account, tenant=tenant
            )
        except (PanelError, KillSwitchRefused) as exc:
            form.add_error(None, str(exc))
        else:
            messages.warning(
                request,
                f"{Switch(switch).label}: {len(use.commands)} command(s) raised on the fast lane "
                f"({', '.join(use.commands)}), recorded as yours.",
            )
            return redirect(back)
    accounts = 1
    if account is None:
        accounts = (accounts_to_halt(tenant) if switch == Switch.HALT_TENANT else halted_by_tenant(tenant)).count()
    snapshot = (account.last_snapshot or {}) if account is not None else {}
    return _page(
        request,
        "panel/kill_switch.html",
        f"{Switch(switch).label}?",
        form=form,
        switch=Switch(switch),
        account=account,
        tenant=tenant,
        accounts=accounts,
        effect=effect_of(switch, accounts=accounts),
        environment=environment_label(),
        positions=len(snapshot.get("positions") or []),
        orders=len(snapshot.get("pending_orders") or []),
        snapshot_at=account.last_snapshot_at if account is not None else None,
        back_url=back,
    )


# --- Environment and catalogue --------------------------------------------------------------------


@require_GET
@requires("panel.view_environment")
def environment(request: HttpRequest) -> TemplateResponse:
    return _page(request, "panel/environment.html", "Environment", report=environment_report(request.user))


@require_GET
@requires("panel.view_catalogue")
def catalogue(request: HttpRequest) -> TemplateResponse:
    return _page(
        request,
        "panel/catalogue.html",
        "Command catalogue",
        entries=catalogue_entries(),
        headers=REQUIRED_HEADERS,
        docs_url=reverse("api-docs"),
        schema_url=reverse("schema"),
        can_build=request.user.has_perm("panel.use_builder"),
    )
