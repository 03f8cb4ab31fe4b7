"""The admin index as an operator's first look: is the bridge healthy, what failed lately, who is in breach,
which alerts are open. The same figures are served as a fragment the page polls (htmx, every few seconds).

Each counter is defined here exactly as the list it opens: the list's filters (`COUNTER_FILTERS`, used by
the commands list; `in_breach_q`, used by the accounts list) are the counter's own query, so "5" never
opens a list of 3. Every number is counted over the tenants the user may see, with indexed filters only.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Count, Q
from django.urls import reverse
from django.utils import timezone

from commands.models import Command
from commands.states import State
from panel.scoping import scope_queryset
from policies.models import TradingAccount
from risk.breach import breach_status, in_breach_q

# How often the dashboard asks for fresh figures.
REFRESH_SECONDS = 5
# The commands list's "received" filter and the dashboard's window: the same hour.
WINDOW = timedelta(hours=1)
# The commands list's "outcome" filter, value -> (label, states).
OUTCOMES: dict[str, tuple[str, tuple[str, ...]]] = {
    "failed": ("Failed, rejected or expired", (State.FAILED, State.REJECTED, State.EXPIRED)),
    "waiting": ("Queued or executing", (State.QUEUED, State.EXECUTING)),
}
BREACHED_SHOWN = 10


def received_in_window(now: datetime | None = None) -> Q:
    return Q(received_at__gte=(now or timezone.now()) - WINDOW)


def _card(label: str, value: int, url: str, tone: str, key: str) -> dict[str, Any]:
    return {"key": key, "label": label, "value": value, "url": url, "tone": tone}


def command_cards(user: Any) -> list[dict[str, Any]]:
    by_state = dict(
        scope_queryset(Command.objects.filter(received_in_window()), user)
        .values_list("state")
        .annotate(n=Count("id"))
        .values_list("state", "n")
    )
    url = reverse("admin:commands_command_changelist")
    cards = [_card("Commands, last hour", sum(by_state.values()), f"{url}?received=1h", "info", "commands")]
    for key, (label, states) in OUTCOMES.items():
        value = sum(by_state.get(state, 0) for state in states)
        tone = ("danger" if value else "ok") if key == "failed" else "info"
        cards.append(_card(f"{label}, last hour", value, f"{url}?received=1h&outcome={key}", tone, key))
    return cards


def breached_accounts(user: Any) -> tuple[int, list[dict[str, Any]]]:
    """How many accounts are in breach (risk.breach), and the first few with why and since when."""
    accounts = scope_queryset(TradingAccount.objects.filter(in_breach_q()), user)
    count = accounts.count()
    shown = []
    for account in accounts.select_related("tenant", "risk", "current_policy").order_by("login")[:BREACHED_SHOWN]:
        status = breach_status(account)
        if status is not None:
            shown.append(
                {
                    "account": account,
                    "reason": status.reason,
                    "since": status.since,
                    "url": reverse("admin:policies_tradingaccount_risk", args=[account.pk]),
                }
            )
    return count, shown


def health(user: Any) -> dict[str, Any]:
    """The environment page's checks, trimmed to the first screen: lanes, MT5, risk monitors, outbox."""
    from panel.environment import environment_report

    report = environment_report(user)
    mt5 = report["mt5"]
    return {
        "overall": report["overall"],
        "checked_at": report["checked_at"],
        "lanes": report["lanes"],
        "mt5": {
            "backend": mt5.get("backend"),
            "status": mt5.get("status", "down"),
            "available": mt5.get("available"),
            "detail": mt5.get("detail") or mt5.get("error") or "",
            "failure": mt5.get("recent_connection_failure"),
            "terminals": [
                (name, bool(status.get("available")))
                for name, status in (mt5.get("terminals") or {}).items()
                if isinstance(status, dict)
            ],
            "stale": mt5.get("accounts_with_stale_snapshot"),
        },
        "monitors": mt5.get("risk_monitors_alive"),
        "monitor_status": "ok" if mt5.get("risk_monitors_alive") else "down",
        "outbox": report["outbox"],
        "url": reverse("panel:environment"),
    }


def open_alerts(user: Any) -> tuple[int, list[Any]]:
    from alerts.models import Alert

    alerts = scope_queryset(Alert.objects.filter(acknowledged_at__isnull=True), user)
    return alerts.count(), list(alerts.order_by("-created_at", "-id")[:5])


def dashboard_data(user: Any) -> dict[str, Any]:
    """Everything the first screen shows, for the index and for the polled fragment."""
    data: dict[str, Any] = {"refresh_seconds": REFRESH_SECONDS, "now": timezone.now()}
    cards: list[dict[str, Any]] = []
    if user.has_perm("commands.view_command"):
        cards.extend(command_cards(user))
    if user.has_perm("policies.view_tradingaccount"):
        count, shown = breached_accounts(user)
        cards.append(
            _card(
                "Accounts in breach",
                count,
                reverse("admin:policies_tradingaccount_changelist") + "?risk=breached",
                "danger" if count else "ok",
                "breach",
            )
        )
        data["breached"] = shown
    if user.has_perm("callbacks.view_callbackdelivery"):
        from callbacks.models import CallbackDelivery, DeliveryStatus

        dead = scope_queryset(CallbackDelivery.objects.filter(status=DeliveryStatus.DEAD), user).count()
        url = reverse("admin:callbacks_callbackdelivery_changelist") + "?due=dead"
        cards.append(_card("Callbacks dead-lettered", dead, url, "danger" if dead else "ok", "dead"))
    if user.has_perm("alerts.view_alert"):
        count, alerts = open_alerts(user)
        url = reverse("admin:alerts_alert_changelist") + "?open=yes"
        cards.append(_card("Open alerts", count, url, "danger" if count else "ok", "alerts"))
        data["alerts"] = alerts
        data["can_acknowledge"] = user.has_perm("alerts.change_alert")
    if user.has_perm("panel.view_environment"):
        data["health"] = health(user)
    data["cards"] = cards
    data["environment"] = settings.BRIDGE_ENVIRONMENT
    return data


def dashboard_callback(request: Any, context: dict[str, Any]) -> dict[str, Any]:
    user = request.user
    data = dashboard_data(user)
    context["panel_cards"] = data["cards"]
    context["panel_dashboard"] = data
    return context
