"""The panel on a bad day (issue #20): one "in breach" everywhere, kill switches behind a confirmation, a live
dashboard whose counters are the lists they open, and no MT5 send without a confirmation.

Personas: alice trades on 50040367 (tenant_1) through the API; oscar is an operator who sees every tenant;
sue is support (read-only); root a superuser.
"""

# ruff: noqa: F811  (the personas' fixtures are imported from tests.test_panel_personas, then named as arguments)

from __future__ import annotations

from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth.models import User
from django.urls import reverse
from django.utils import timezone

from bridgeproject.jsonutil import utc_iso
from commands.lanes import Lane
from commands.models import Command
from commands.states import State
from execution.gateways import get_gateway, reset_gateway
from execution.runner import command_execute
from execution.simulator.service import sim_set_price
from panel.formatting import utc
from panel.models import KillSwitchUse
from policies.models import ProtectiveAction, TradingAccount
from risk.breach import breach_status
from risk.engine import risk_evaluate_account
from tests.conftest import LOGIN, SERVER, Api, fresh, register_account
from tests.test_panel_personas import World, logged_in, make_user, oscar, root, sue, world  # noqa: F401

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _terminal():
    reset_gateway()
    yield
    reset_gateway()


def account() -> TradingAccount:
    return TradingAccount.objects.select_related("current_policy", "tenant", "risk").get(login=LOGIN)


def evaluate() -> None:
    risk_evaluate_account(account=account(), gateway=get_gateway())


def run_fast_lane() -> list[str]:
    return [
        command_execute(command.pk)
        for command in Command.objects.filter(lane=Lane.FAST, state=State.QUEUED).order_by("id")
    ]


def api_command(api: Api, command_type: str, **payload: Any) -> Command:
    body = fresh("close_positions")
    body["payload"] = {
        "command_id": f"{command_type}-{timezone.now().timestamp()}",
        "command_type": command_type,
        **payload,
    }
    assert api.post("mt5/commands", body).status_code == 202
    return Command.objects.get(command_id=body["payload"]["command_id"])


def open_buy(api: Api, volume: float) -> None:
    command = api_command(api, "open_position", symbol="EURUSD", direction="buy", volume=volume)
    assert command_execute(command.pk) == State.SUCCEEDED


@pytest.fixture
def closed_out(trader: Api) -> ProtectiveAction:
    """The issue's account: a daily drawdown closed it out and left it under its daily floor (93,575), with
    disable_trading_on_breach off, so it is neither hard-breached nor blocked."""
    open_buy(trader, 2.0)
    sim_set_price("EURUSD", "1.05000")  # 2 lots × 350 pips: about 93,000, under the floor
    evaluate()
    run_fast_lane()
    evaluate()
    daily = ProtectiveAction.objects.get(rule_key="daily_drawdown")
    assert daily.goal_met_at is not None and get_gateway().account_snapshot(LOGIN, SERVER).positions == ()
    risk = account().risk
    assert not risk.hard_breached and not risk.trading_block and risk.measured < risk.daily_floor
    return daily


# --- 1. one definition of "in breach" -----------------------------------------------------------------


def test_an_account_closed_out_under_its_daily_floor_is_in_breach_in_the_list_the_chart_the_dashboard_and_the_api(
    trader: Api, closed_out: ProtectiveAction, root: User
) -> None:
    status = breach_status(account())
    assert status is not None and "below the daily floor 93,575.00" in status.reason
    assert status.since == closed_out.detection_timestamp
    panel = logged_in(root)

    listed = panel.get(reverse("admin:policies_tradingaccount_changelist"), {"risk": "breached"})
    assert [a.login for a in listed.context["cl"].result_list] == [LOGIN]
    html = listed.content.decode()
    assert "in breach" in html and f"since {utc(closed_out.detection_timestamp)}" in html
    within = panel.get(reverse("admin:policies_tradingaccount_changelist"), {"risk": "ok"})
    assert list(within.context["cl"].result_list) == []

    chart = panel.get(reverse("admin:policies_tradingaccount_risk", args=[account().pk]))
    assert chart.context["breach"] == status
    assert "within limits" not in chart.content.decode() and "below the daily floor" in chart.content.decode()

    cards = {card["key"]: card for card in panel.get(reverse("admin:index")).context["panel_cards"]}
    assert cards["breach"]["value"] == 1
    opened = panel.get(cards["breach"]["url"])
    assert len(opened.context["cl"].result_list) == cards["breach"]["value"]

    body = trader.get(f"mt5/accounts/{LOGIN}").json()
    assert body["in_breach"]["since"] == utc_iso(closed_out.detection_timestamp)
    assert any("below the daily floor" in reason for reason in body["in_breach"]["reasons"])


def test_an_account_within_its_limits_is_in_breach_nowhere(trader: Api, root: User) -> None:
    evaluate()
    assert breach_status(account()) is None
    assert trader.get(f"mt5/accounts/{LOGIN}").json()["in_breach"] is None
    panel = logged_in(root)
    listed = panel.get(reverse("admin:policies_tradingaccount_changelist"), {"risk": "ok"})
    assert [a.login for a in listed.context["cl"].result_list] == [LOGIN]
    cards = {card["key"]: card["value"] for card in panel.get(reverse("admin:index")).context["panel_cards"]}
    assert cards["breach"] == 0


# --- 2. kill switches ---------------------------------------------------------------------------------


def switch_url(kind: str, pk: int, switch: str) -> str:
    return reverse("panel:kill-switch", args=[kind, pk, switch])


def test_an_operator_disables_trading_with_a_reason_and_the_api_refuses_new_positions_until_enabled_again(
    trader: Api, oscar: User
) -> None:
    panel = logged_in(oscar)
    url = switch_url("account", account().pk, "disable_trading")
    before = Command.objects.count()

    asked = panel.get(url)
    page = asked.content.decode()
    assert asked.status_code == 200 and f"{LOGIN} @ {SERVER}" in page and "PROD · SIMULATOR" in page
    assert "every new position is refused" in page
    assert panel.post(url, {"reason": ""}).status_code == 200  # no reason: asked again, nothing sent
    assert Command.objects.count() == before and not KillSwitchUse.objects.exists()

    done = panel.post(url, {"reason": "trader abusing news spikes, ticket 4411"})
    assert done.status_code == 302
    use = KillSwitchUse.objects.get()
    assert (use.username, use.reason, use.environment) == (
        "oscar",
        "trader abusing news spikes, ticket 4411",
        "PROD · SIMULATOR",
    )
    raised = Command.objects.get(command_id=use.commands[0])
    assert (raised.command_type, raised.lane, raised.source) == ("disable_trading", "fast", "bridge")
    assert raised.envelope["operator"] == "oscar" and "ticket 4411" in raised.reason

    assert run_fast_lane() == [State.SUCCEEDED]
    body = trader.get(f"mt5/accounts/{LOGIN}").json()
    assert body["trading_enabled"] is False
    assert any(reason.startswith("trading disabled") for reason in body["in_breach"]["reasons"])
    refused = api_command(trader, "open_position", symbol="EURUSD", direction="buy", volume=0.1)
    assert command_execute(refused.pk) == State.REJECTED

    # Now the account page offers "Enable trading" and no longer "Disable trading".
    change = panel.get(reverse("admin:policies_tradingaccount_change", args=[account().pk])).content.decode()
    assert "enable-trading" in change and "disable-trading" not in change
    assert panel.post(switch_url("account", account().pk, "enable_trading"), {"reason": "cleared by risk desk"})
    run_fast_lane()
    assert trader.get(f"mt5/accounts/{LOGIN}").json()["in_breach"] is None
    assert list(KillSwitchUse.objects.order_by("used_at").values_list("switch", flat=True)) == [
        "disable_trading",
        "enable_trading",
    ]


def test_close_all_and_disable_makes_the_account_flat_on_the_fast_lane(trader: Api, oscar: User) -> None:
    open_buy(trader, 0.5)
    url = switch_url("account", account().pk, "close_all_and_disable")
    assert logged_in(oscar).post(url, {"reason": "margin call on the desk"}).status_code == 302
    raised = Command.objects.filter(command_id__in=KillSwitchUse.objects.get().commands).order_by("pk")
    assert [(c.command_type, c.lane) for c in raised] == [
        ("disable_trading", "fast"),
        ("close_positions", "fast"),
        ("cancel_orders", "fast"),
    ]
    assert set(run_fast_lane()) == {State.SUCCEEDED}
    assert get_gateway().account_snapshot(LOGIN, SERVER).positions == ()
    assert account().trading_enabled is False


def test_halting_a_tenant_disables_every_account_and_enabling_it_restores_only_those_the_halt_disabled(
    trader: Api, oscar: User
) -> None:
    second = register_account(account().tenant, login=50040368)
    panel = logged_in(oscar)
    panel.post(switch_url("account", second.pk, "disable_trading"), {"reason": "kyc pending"})
    run_fast_lane()
    tenant = account().tenant

    tenant_page = reverse("admin:tenancy_tenant_change", args=[tenant.pk])
    actions = tenant_page.removesuffix("change/")
    offered = panel.get(tenant_page).content.decode()
    assert f"{actions}halt/" in offered and f"{actions}resume/" not in offered
    halt = switch_url("tenant", tenant.pk, "halt_tenant")
    assert "1 account(s) affected" in panel.get(halt).content.decode()
    assert panel.post(halt, {"reason": "broker incident"}).status_code == 302
    run_fast_lane()
    assert not TradingAccount.objects.filter(tenant=tenant, trading_enabled=True).exists()

    assert f"{actions}resume/" in panel.get(tenant_page).content.decode()
    assert panel.post(switch_url("tenant", tenant.pk, "resume_tenant"), {"reason": "incident over"}).status_code == 302
    run_fast_lane()
    assert account().trading_enabled is True
    second.refresh_from_db()
    assert second.trading_enabled is False and "kyc pending" in second.trading_disabled_reason


def test_support_gets_a_styled_403_and_sends_nothing(trader: Api, sue: User) -> None:
    response = logged_in(sue).post(switch_url("account", account().pk, "disable_trading"), {"reason": "just because"})
    assert response.status_code == 403
    assert "unfold" in response.content.decode() and "You may not" in response.content.decode()
    assert not Command.objects.filter(source="bridge").exists()


def test_a_scoped_operator_cannot_switch_another_tenants_account(trader: Api, bob: Api) -> None:
    other = register_account(bob_tenant(), login=77770002, server="Other-Server")
    tess = make_user("tess", groups=("operators",), scope=[account().tenant])
    response = logged_in(tess).post(switch_url("account", other.pk, "disable_trading"), {"reason": "not mine"})
    assert response.status_code == 404
    assert not Command.objects.filter(account=other).exists()


def bob_tenant() -> Any:
    from tenancy.models import Tenant

    return Tenant.objects.get(tenant_id="tenant_2")


# --- 3. no real trade by accident ---------------------------------------------------------------------


def test_a_builder_send_that_opens_a_position_does_nothing_until_oscar_confirms_it(trader: Api, oscar: User) -> None:
    import json

    panel = logged_in(oscar)
    config = panel.get(reverse("panel:builder")).context["builder_config"]
    assert config["initial"]["request_type"] == "sync_request"  # read-only until oscar picks something else
    body = fresh("close_positions")
    body["payload"] = {"command_id": "by-hand-1", "command_type": "open_position", "symbol": "EURUSD"}
    body["payload"].update(direction="buy", volume=1.0)
    send = {"tenant_id": "tenant_1", "method": "POST", "path": "/api/v1/mt5/commands", "body": body}

    asked = panel.post(reverse("panel:builder-send"), json.dumps(send), content_type="application/json")
    assert asked.status_code == 428
    assert asked.json()["confirm"] == {
        "account": f"{LOGIN} @ {SERVER}",
        "environment": "PROD · SIMULATOR",
        "effect": "opens a buy position of 1.0 lot(s) EURUSD on MT5",
    }
    assert not Command.objects.filter(command_id="by-hand-1").exists()

    sent = panel.post(
        reverse("panel:builder-send"), json.dumps({**send, "confirmed": True}), content_type="application/json"
    )
    assert sent.json()["status"] == 202 and Command.objects.filter(command_id="by-hand-1").exists()


def test_a_replay_asks_first_and_a_read_only_one_does_not(world: World, oscar: User) -> None:
    from panel.models import LibraryPayload

    panel = logged_in(oscar)
    payload = LibraryPayload.objects.get(slug="open_position")
    url = reverse("admin:panel_librarypayload_replay", args=[payload.pk])
    before = Command.objects.count()
    asked = panel.post(url, {"tenant": world.tenant_1.pk, "mode": "fresh"})
    assert asked.context["confirm"].effect.startswith("opens a buy position")
    assert "PROD · SIMULATOR" in asked.content.decode() and Command.objects.count() == before
    done = panel.post(url, {"tenant": world.tenant_1.pk, "mode": "fresh", "confirmed": "1"})
    assert done.context["result"].status == 202 and Command.objects.count() == before + 1

    sync = LibraryPayload.objects.get(slug="sync_request")
    sync_url = reverse("admin:panel_librarypayload_replay", args=[sync.pk])
    read = panel.post(sync_url, {"tenant": world.tenant_1.pk, "mode": "fresh"})
    assert read.context["confirm"] is None and read.context["result"] is not None


def test_the_badge_names_the_environment_and_the_mt5_backend(root: User, settings: Any) -> None:
    from panel.navigation import environment_badge

    assert environment_badge(None) == ["PROD · SIMULATOR", "warning"]  # type: ignore[arg-type]
    settings.MT5_BACKEND, settings.BRIDGE_ENVIRONMENT = "official", "staging"
    assert environment_badge(None) == ["STAGING · OFFICIAL", "danger"]  # type: ignore[arg-type]


# --- 4. and 5. the live dashboard and its alerts ------------------------------------------------------


def test_the_dashboard_fragment_is_served_to_htmx_polls_and_tells_a_signed_out_poll_to_reload(
    trader: Api, root: User
) -> None:
    from django.test import Client

    panel = logged_in(root)
    index = panel.get(reverse("admin:index")).content.decode()
    live_url = reverse("panel:dashboard-live")
    assert f'hx-get="{live_url}"' in index and 'hx-trigger="every 5s"' in index
    assert "unfold/js/htmx/htmx.js" in index and "cdn" not in index.lower()  # htmx from our own static files

    fragment = panel.get(live_url, HTTP_HX_REQUEST="true")
    html = fragment.content.decode()
    assert fragment.status_code == 200 and "<html" not in html and 'id="panel-health"' in html
    assert 'id="health-mt5"' in html and "normal lane" in html and "callback outbox" in html
    assert panel.get(live_url)["Location"] == reverse("admin:index")  # opened by hand: the whole dashboard

    signed_out = Client().get(live_url, HTTP_HX_REQUEST="true")
    assert signed_out["HX-Redirect"].startswith(reverse("admin:login"))


def test_oscar_sees_the_breach_alert_on_the_dashboard_and_acknowledges_it_there(
    trader: Api, closed_out: ProtectiveAction, oscar: User
) -> None:
    from alerts.models import Alert

    alert = Alert.objects.get(kind=Alert.Kind.ACCOUNT_BREACH)
    assert alert.title.startswith(f"Account {LOGIN}: daily_drawdown breached") and "93,575.00" in alert.title
    panel = logged_in(oscar)
    fragment = panel.get(reverse("panel:dashboard-live"), HTTP_HX_REQUEST="true").content.decode()
    assert alert.title in fragment and reverse("panel:alert-acknowledge", args=[alert.pk]) in fragment

    assert panel.post(reverse("panel:alert-acknowledge", args=[alert.pk])).status_code == 302
    alert.refresh_from_db()
    assert alert.acknowledged_by == oscar
    cards = {card["key"]: card["value"] for card in panel.get(reverse("admin:index")).context["panel_cards"]}
    assert cards["alerts"] == 0


def test_every_dashboard_counter_equals_the_list_it_opens_and_the_list_says_which_filter(
    world: World, root: User
) -> None:
    from datetime import timedelta

    from tests.conftest import queue_command

    for n, state in enumerate((State.FAILED, State.REJECTED, State.EXPIRED, State.SUCCEEDED)):
        Command.objects.filter(pk=queue_command(world.account_1, "sync_account", f"c-{n}").pk).update(state=state)
    old = queue_command(world.account_1, "sync_account", "two-hours-old")
    Command.objects.filter(pk=old.pk).update(state=State.FAILED, received_at=timezone.now() - timedelta(hours=2))
    panel = logged_in(root)
    cards = panel.get(reverse("admin:index")).context["panel_cards"]
    assert {card["key"]: card["value"] for card in cards}["failed"] == 3  # not the one two hours old
    for card in cards:
        opened = panel.get(card["url"])
        rows = opened.context["cl"].queryset.count()
        assert rows == card["value"], card["label"]
        specs = opened.context["cl"].filter_specs
        chosen = [spec for spec in specs if isinstance(spec, admin.SimpleListFilter) and spec.value()]
        assert chosen, f"{card['label']}: the filter drawer says All"


# --- 6. pages that fit --------------------------------------------------------------------------------


def test_the_command_page_leads_with_its_state_what_mt5_said_and_the_timeline(world: World, root: User) -> None:
    Command.objects.filter(pk=world.command_1.pk).update(
        state=State.FAILED, error_code="market_closed", error_message="Market is closed", finished_at=timezone.now()
    )
    page = logged_in(root).get(reverse("admin:commands_command_change", args=[world.command_1.pk])).content.decode()
    state, said, timeline = page.index('id="command-state"'), page.index('id="command-result"'), page.index("Timeline")
    assert state < said < timeline < page.index("Raw envelope as received")
    assert "market_closed: Market is closed" in page


def test_cancel_is_offered_on_a_queued_command_and_never_on_a_finished_one(world: World, oscar: User) -> None:
    panel = logged_in(oscar)
    cancel = reverse("admin:commands_command_cancel_detail", args=[world.command_1.pk])
    page = reverse("admin:commands_command_change", args=[world.command_1.pk])
    assert cancel in panel.get(page).content.decode()
    Command.objects.filter(pk=world.command_1.pk).update(state=State.SUCCEEDED)
    assert cancel not in panel.get(page).content.decode()


def test_signing_in_on_a_bookmarked_login_page_lands_on_the_dashboard(root: User) -> None:
    from django.test import Client

    from tests.test_panel_personas import PASSWORD

    response = Client().post(reverse("admin:login"), {"username": "root", "password": PASSWORD})
    assert response.status_code == 302 and response["Location"] == reverse("admin:index")


def test_a_missing_panel_page_is_a_styled_404_and_a_missing_api_route_stays_problem_json(root: User) -> None:
    panel = logged_in(root)
    missing = panel.get(reverse("panel:kill-switch", args=["account", 999999, "disable_trading"]))
    assert missing.status_code == 404 and "Back to the dashboard" in missing.content.decode()
    assert panel.get("/api/v1/no-such-route")["Content-Type"].startswith("application/problem+json")


def test_money_has_the_accounts_currency_digits_and_every_time_one_format() -> None:
    from datetime import UTC, datetime
    from decimal import Decimal

    from panel.formatting import money

    yen = TradingAccount(last_snapshot={"currency": "JPY", "currency_digits": 0})
    assert money(Decimal("9470790.12345678"), yen, with_currency=True) == "9,470,790 JPY"
    assert money(Decimal("94707.90000000"), TradingAccount(last_snapshot={"currency_digits": 2})) == "94,707.90"
    assert utc(datetime(2026, 5, 29, 12, 0, 0, 123456, tzinfo=UTC)) == "2026-05-29 12:00:00 UTC"


def test_re_send_is_offered_on_a_dead_letter_and_not_on_a_delivery_still_on_its_way(world: World, oscar: User) -> None:
    from callbacks.models import CallbackDelivery, DeliveryStatus

    panel = logged_in(oscar)
    resend = reverse("admin:callbacks_callbackdelivery_resend_detail", args=[world.delivery_1.pk])
    page = reverse("admin:callbacks_callbackdelivery_change", args=[world.delivery_1.pk])
    assert resend in panel.get(page).content.decode()  # dead-lettered
    CallbackDelivery.objects.filter(pk=world.delivery_1.pk).update(status=DeliveryStatus.PENDING)
    assert resend not in panel.get(page).content.decode()
