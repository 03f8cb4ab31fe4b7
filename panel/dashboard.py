"""The admin index as an operator's first look: is the bridge healthy, what failed lately, who is in breach.

Every number is counted over the tenants the user may see, with indexed filters only.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db.models import Count
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone

from commands.models import Command
from commands.states import State
from panel.scoping import scope_queryset
from policies.models import AccountRisk

FAILED_STATES = (State.FAILED, State.REJECTED, State.EXPIRED)


def _card(label: str, value: int, url: str, tone: str) -> dict[str, Any]:
    return {"label": label, "value": value, "url": url, "tone": tone}


def dashboard_callback(request: HttpRequest, context: dict[str, Any]) -> dict[str, Any]:
    user = request.user
    if not user.has_perm("commands.view_command") and not user.has_perm("policies.view_tradingaccount"):
        return context
    since = timezone.now() - timedelta(hours=1)
    cards: list[dict[str, Any]] = []
    if user.has_perm("commands.view_command"):
        by_state = dict(
            scope_queryset(Command.objects.filter(received_at__gte=since), user)
            .values_list("state")
            .annotate(n=Count("id"))
            .values_list("state", "n")
        )
        commands_url = reverse("admin:commands_command_changelist")
        cards.append(_card("Commands, last hour", sum(by_state.values()), commands_url, "info"))
        failed = sum(by_state.get(state, 0) for state in FAILED_STATES)
        cards.append(
            {
                "label": "Failed, rejected or expired, last hour",
                "value": failed,
                "url": f"{commands_url}?state=failed",
                "tone": "danger" if failed else "ok",
            }
        )
        waiting = by_state.get(State.QUEUED, 0) + by_state.get(State.EXECUTING, 0)
        cards.append(
            _card("Queued or executing, received in the last hour", waiting, f"{commands_url}?state=queued", "info")
        )
    if user.has_perm("policies.view_tradingaccount"):
        breached = scope_queryset(AccountRisk.objects.filter(hard_breached=True), user).count()
        cards.append(
            {
                "label": "Accounts in hard breach",
                "value": breached,
                "url": reverse("admin:policies_tradingaccount_changelist") + "?risk=breached",
                "tone": "danger" if breached else "ok",
            }
        )
    if user.has_perm("callbacks.view_callbackdelivery"):
        from callbacks.models import CallbackDelivery, DeliveryStatus

        dead = scope_queryset(CallbackDelivery.objects.filter(status=DeliveryStatus.DEAD), user).count()
        cards.append(
            {
                "label": "Callbacks dead-lettered",
                "value": dead,
                "url": reverse("admin:callbacks_callbackdelivery_changelist") + "?due=dead",
                "tone": "danger" if dead else "ok",
            }
        )
    context["panel_cards"] = cards
    return context
