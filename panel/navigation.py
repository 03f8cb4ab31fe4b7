"""The sidebar, the environment badge and the stylesheet of the themed admin (settings.UNFOLD points here)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest
from django.templatetags.static import static
from django.urls import reverse


def environment_label() -> str:
    """The environment and the MT5 backend, as every confirmation names them: PROD · SIMULATOR."""
    return f"{settings.BRIDGE_ENVIRONMENT} · {settings.MT5_BACKEND}".upper()


def environment_badge(request: HttpRequest) -> list[str]:
    """Red when a send reaches a real MT5 (any backend but the simulator), in any environment; amber on the
    simulator. The label says both, so nobody mistakes a simulator for production, or the reverse."""
    return [environment_label(), "warning" if settings.MT5_BACKEND == "simulator" else "danger"]


def panel_stylesheet(request: HttpRequest) -> str:
    return static("panel/panel.css")


def favicon(request: HttpRequest) -> str:
    return static("panel/favicon.svg")


def _can(permission: str) -> Any:
    return lambda request: request.user.has_perm(permission)


def _model(title: str, icon: str, app_label: str, model: str) -> dict[str, Any]:
    return {
        "title": title,
        "icon": icon,
        "link": reverse(f"admin:{app_label}_{model}_changelist"),
        "permission": _can(f"{app_label}.view_{model}"),
    }


def _page(title: str, icon: str, url_name: str, permission: str) -> dict[str, Any]:
    return {"title": title, "icon": icon, "link": reverse(url_name), "permission": _can(permission)}


def sidebar(request: HttpRequest) -> list[dict[str, Any]]:
    """Groups in the order an operator works through an incident: what happened, to whom, who was told."""
    return [
        {
            "title": "Panel",
            "items": [
                {"title": "Dashboard", "icon": "dashboard", "link": reverse("admin:index")},
                _model("Alerts", "notifications_active", "alerts", "alert"),
                _page("Payload builder", "construction", "panel:builder", "panel.use_builder"),
                _model("Test payloads", "science", "panel", "librarypayload"),
                _page("Environment", "monitor_heart", "panel:environment", "panel.view_environment"),
                _page("Command catalogue", "menu_book", "panel:catalogue", "panel.view_catalogue"),
                {"title": "OpenAPI (Swagger UI)", "icon": "api", "link": reverse("api-docs")},
            ],
        },
        {
            "title": "Commands",
            "separator": True,
            "items": [
                _model("Commands", "bolt", "commands", "command"),
                _model("Command timeline events", "timeline", "commands", "commandevent"),
                _model("Idempotency records", "fingerprint", "commands", "idempotencyrecord"),
                _model("Lane workers", "dns", "commands", "laneheartbeat"),
            ],
        },
        {
            "title": "Accounts and risk",
            "separator": True,
            "items": [
                _model("Trading accounts", "account_balance", "policies", "tradingaccount"),
                _model("Risk states", "shield", "policies", "accountrisk"),
                _model("Protective actions", "gpp_maybe", "policies", "protectiveaction"),
                _model("Kill switch log", "front_hand", "panel", "killswitchuse"),
                _model("Policy snapshots", "policy", "policies", "policysnapshot"),
                _model("Risk samples", "show_chart", "policies", "risksample"),
                _model("Risk monitors", "radar", "policies", "monitorheartbeat"),
            ],
        },
        {
            "title": "Callbacks to Laravel",
            "separator": True,
            "items": [
                _model("Deliveries", "outbox", "callbacks", "callbackdelivery"),
                _model("Delivery attempts", "send", "callbacks", "callbackattempt"),
            ],
        },
        {
            "title": "Access",
            "separator": True,
            "items": [
                _model("API tokens", "key", "tenancy", "apitoken"),
                _model("Tenants", "apartment", "tenancy", "tenant"),
                _model("Staff tenant scopes", "badge", "panel", "staffscope"),
                _model("Users", "person", "auth", "user"),
                _model("Groups", "group", "auth", "group"),
            ],
        },
        {
            "title": "MT5 terminals",
            "separator": True,
            "items": [
                _model("Terminals", "terminal", "execution", "terminal"),
            ],
        },
        {
            "title": "MT5 simulator",
            "separator": True,
            "collapsible": True,
            "items": [
                _model("Accounts", "account_box", "execution", "simaccount"),
                _model("Symbols", "currency_exchange", "execution", "simsymbol"),
                _model("Positions", "stacked_line_chart", "execution", "simposition"),
                _model("Orders", "receipt_long", "execution", "simorder"),
                _model("Deals", "handshake", "execution", "simdeal"),
                _model("Injected faults", "bug_report", "execution", "simfault"),
            ],
        },
    ]
