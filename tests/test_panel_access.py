"""The permission matrix of the panel: every admin page and action, per persona; and tenant isolation everywhere.

Personas (tests.test_panel_personas): root (superuser), oscar (operator, every tenant), sue
(support, every tenant), tess (operator scoped to tenant_1), nadia (staff, no group), anonymous.
"""

# ruff: noqa: F811  (the personas' fixtures are imported from tests.test_panel_personas, then named as arguments)

from __future__ import annotations

import json
from typing import Any

import pytest
from django.apps import apps
from django.contrib import admin
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from callbacks.models import CallbackAttempt, CallbackDelivery, DeliveryStatus
from commands.models import Command, CommandEvent, IdempotencyRecord
from commands.states import State
from panel.models import LibraryPayload, PanelSend
from panel.payloads import SAMPLE_ACCOUNT
from policies.models import AccountRisk, PolicySnapshot, RiskSample
from tenancy.models import ApiToken
from tests.test_panel_personas import (  # noqa: F401  (fixtures)
    T2_COMMAND,
    T2_MARKERS,
    World,
    logged_in,
    nadia,
    olaf,
    oscar,
    root,
    sue,
    tess,
    world,
)

OPERATOR_MODELS = {
    "alerts.alert",
    "tenancy.tenant",
    "tenancy.apitoken",
    "policies.tradingaccount",
    "policies.policysnapshot",
    "policies.accountrisk",
    "policies.risksample",
    "policies.protectiveaction",
    "policies.monitorheartbeat",
    "commands.command",
    "commands.commandevent",
    "commands.idempotencyrecord",
    "callbacks.callbackdelivery",
    "callbacks.callbackattempt",
    "panel.librarypayload",
    "panel.panelsend",
    "panel.killswitchuse",
}
SUPPORT_MODELS = {
    "policies.tradingaccount",
    "policies.policysnapshot",
    "policies.accountrisk",
    "policies.risksample",
    "policies.protectiveaction",
    "commands.command",
    "commands.commandevent",
}
# Personas are fetched by name (request.getfixturevalue): the marker makes every test a database test up front.
pytestmark = pytest.mark.django_db

CAN_VIEW = {"root": None, "oscar": OPERATOR_MODELS, "tess": OPERATOR_MODELS, "sue": SUPPORT_MODELS, "nadia": set()}


def persona_client(request: pytest.FixtureRequest, name: str) -> Client:
    if name == "anonymous":
        request.getfixturevalue("world")
        return Client()
    return logged_in(request.getfixturevalue(name))


def changelist(label: str) -> str:
    app_label, model = label.split(".")
    return reverse(f"admin:{app_label}_{model}_changelist")


def change(obj: Any) -> str:
    return reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_change", args=[obj.pk])


def registered() -> list[str]:
    return sorted(model._meta.label_lower for model in apps.get_models() if admin.site.is_registered(model))


# --- every admin list page --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["root", "oscar", "sue", "tess", "nadia"])
def test_every_list_page_opens_exactly_for_the_roles_that_may_view_it(
    request: pytest.FixtureRequest, name: str
) -> None:
    client = persona_client(request, name)
    allowed = CAN_VIEW[name]
    expected = {label: 200 if allowed is None or label in allowed else 403 for label in registered()}
    actual = {label: client.get(changelist(label)).status_code for label in registered()}
    assert actual == expected


def test_anonymous_visitors_are_sent_to_the_login_page(world: World) -> None:
    client = Client()
    for url in [changelist(label) for label in registered()] + [reverse("panel:builder"), reverse("admin:index")]:
        response = client.get(url)
        assert response.status_code == 302 and "/admin/login/" in response["Location"], url


def test_staff_without_a_group_see_an_empty_index_and_no_panel_page(nadia: User) -> None:
    client = logged_in(nadia)
    assert client.get(reverse("admin:index")).status_code == 200
    for name in ("builder", "environment", "catalogue"):
        assert client.get(reverse(f"panel:{name}")).status_code == 403


# --- detail pages -----------------------------------------------------------------------------------


def pairs(world: World) -> dict[str, tuple[Any, Any]]:
    """One row of each tenant for every tenant-owned model."""

    def of(model: Any, **lookup: Any) -> tuple[Any, Any]:
        return (
            model.objects.filter(**{k: v[0] for k, v in lookup.items()}).first(),
            model.objects.filter(**{k: v[1] for k, v in lookup.items()}).first(),
        )

    t = (world.tenant_1, world.tenant_2)
    a = (world.account_1, world.account_2)
    return {
        "tenancy.tenant": t,
        "tenancy.apitoken": of(ApiToken, tenants=t),
        "policies.tradingaccount": a,
        "policies.policysnapshot": of(PolicySnapshot, account=a),
        "policies.accountrisk": of(AccountRisk, account=a),
        "policies.risksample": of(RiskSample, account=a),
        "policies.protectiveaction": (world.action_1, world.action_2),
        "commands.command": (world.command_1, world.command_2),
        "commands.commandevent": of(CommandEvent, command=(world.command_1, world.command_2)),
        "commands.idempotencyrecord": of(IdempotencyRecord, tenant=t),
        "callbacks.callbackdelivery": (world.delivery_1, world.delivery_2),
        "callbacks.callbackattempt": of(CallbackAttempt, delivery=(world.delivery_1, world.delivery_2)),
        "panel.librarypayload": (LibraryPayload.objects.get(slug="close_positions"), world.payload_2),
        "panel.panelsend": (None, PanelSend.objects.get(tenant=world.tenant_2)),
    }


@pytest.mark.parametrize("name", ["root", "oscar", "sue", "tess", "nadia"])
def test_detail_pages_follow_the_role_and_the_tenant_scope(
    request: pytest.FixtureRequest, world: World, name: str
) -> None:
    client = persona_client(request, name)
    allowed = CAN_VIEW[name]
    expected, actual = {}, {}
    for label, (own, other) in pairs(world).items():
        may_view = allowed is None or label in allowed
        for which, obj in (("tenant_1", own), ("tenant_2", other)):
            if obj is None:
                continue
            if not may_view:
                expected[label, which] = 403
            elif name == "tess" and which == "tenant_2":
                expected[label, which] = 302  # "does not exist": the row is not hers to know about
            else:
                expected[label, which] = 200
            actual[label, which] = client.get(change(obj)).status_code
    assert actual == expected


# --- panel pages ------------------------------------------------------------------------------------

PAGE_ACCESS = {
    "builder": {"root", "oscar", "sue", "tess"},
    "environment": {"root", "oscar", "tess"},
    "catalogue": {"root", "oscar", "sue", "tess"},
}


@pytest.mark.parametrize("name", ["root", "oscar", "sue", "tess", "nadia"])
def test_the_panel_pages_open_for_their_roles(request: pytest.FixtureRequest, world: World, name: str) -> None:
    client = persona_client(request, name)
    actual = {page: client.get(reverse(f"panel:{page}")).status_code for page in PAGE_ACCESS}
    assert actual == {page: 200 if name in who else 403 for page, who in PAGE_ACCESS.items()}
    risk = client.get(reverse("admin:policies_tradingaccount_risk", args=[world.account_1.pk])).status_code
    assert risk == (403 if name == "nadia" else 200)
    replay = client.get(
        reverse("admin:panel_librarypayload_replay", args=[LibraryPayload.objects.get(slug="close_positions").pk])
    )
    assert replay.status_code == (200 if name in {"root", "oscar", "tess"} else 403)


def test_tess_cannot_open_the_risk_page_of_a_tenant_2_account(world: World, tess: User) -> None:
    response = logged_in(tess).get(reverse("admin:policies_tradingaccount_risk", args=[world.account_2.pk]))
    assert response.status_code == 302


# --- actions ------------------------------------------------------------------------------------------


def cancel(client: Client, command: Command) -> int:
    return client.post(reverse("admin:commands_command_cancel_detail", args=[command.pk])).status_code


@pytest.mark.parametrize(
    ("name", "allowed"), [("root", True), ("oscar", True), ("tess", True), ("sue", False), ("nadia", False)]
)
def test_only_operators_cancel_a_queued_command(
    request: pytest.FixtureRequest, world: World, name: str, allowed: bool
) -> None:
    status = cancel(persona_client(request, name), world.command_1)
    world.command_1.refresh_from_db()
    assert (status, world.command_1.state) == ((302, State.CANCELLED) if allowed else (403, State.QUEUED))


def test_a_scoped_operator_cannot_cancel_another_tenants_command(world: World, tess: User) -> None:
    assert cancel(logged_in(tess), world.command_2) == 302
    world.command_2.refresh_from_db()
    assert world.command_2.state == State.QUEUED


def test_support_gets_no_bulk_cancel_action(world: World, sue: User) -> None:
    client = logged_in(sue)
    page = client.get(changelist("commands.command"))
    assert b"cancel_selected" not in page.content
    client.post(changelist("commands.command"), {"action": "cancel_selected", "_selected_action": [world.command_1.pk]})
    world.command_1.refresh_from_db()
    assert world.command_1.state == State.QUEUED


def test_the_bulk_cancel_of_a_scoped_operator_skips_rows_outside_her_tenants(world: World, tess: User) -> None:
    logged_in(tess).post(
        changelist("commands.command"),
        {"action": "cancel_selected", "_selected_action": [world.command_1.pk, world.command_2.pk]},
    )
    states = dict(Command.objects.values_list("command_id", "state"))
    assert states[world.command_1.command_id] == State.CANCELLED
    assert states[T2_COMMAND] == State.QUEUED


@pytest.mark.parametrize(
    ("name", "allowed"), [("root", True), ("oscar", True), ("tess", True), ("sue", False), ("nadia", False)]
)
def test_only_operators_resend_a_dead_callback(
    request: pytest.FixtureRequest, world: World, name: str, allowed: bool
) -> None:
    status = (
        persona_client(request, name)
        .post(reverse("admin:callbacks_callbackdelivery_resend_detail", args=[world.delivery_1.pk]))
        .status_code
    )
    world.delivery_1.refresh_from_db()
    assert (status, world.delivery_1.status) == (
        (302, DeliveryStatus.PENDING) if allowed else (403, DeliveryStatus.DEAD)
    )


def test_a_scoped_operator_cannot_resend_another_tenants_delivery(world: World, tess: User) -> None:
    logged_in(tess).post(reverse("admin:callbacks_callbackdelivery_resend_detail", args=[world.delivery_2.pk]))
    logged_in(tess).post(
        changelist("callbacks.callbackdelivery"),
        {"action": "resend_selected", "_selected_action": [world.delivery_2.pk]},
    )
    world.delivery_2.refresh_from_db()
    assert world.delivery_2.status == DeliveryStatus.DEAD


@pytest.mark.parametrize(
    ("name", "allowed"), [("root", True), ("oscar", False), ("tess", False), ("sue", False), ("nadia", False)]
)
def test_only_superusers_revoke_tokens(request: pytest.FixtureRequest, world: World, name: str, allowed: bool) -> None:
    token = ApiToken.objects.get(name="alice")
    status = (
        persona_client(request, name).post(reverse("admin:tenancy_apitoken_revoke_detail", args=[token.pk])).status_code
    )
    token.refresh_from_db()
    assert (status, token.revoked_at is not None) == ((302, True) if allowed else (403, False))


@pytest.mark.parametrize(
    ("name", "allowed"), [("root", True), ("oscar", True), ("tess", True), ("sue", False), ("nadia", False)]
)
def test_only_operators_replay_and_send(request: pytest.FixtureRequest, world: World, name: str, allowed: bool) -> None:
    client = persona_client(request, name)
    payload = LibraryPayload.objects.get(slug="close_positions")
    replay = client.post(
        reverse("admin:panel_librarypayload_replay", args=[payload.pk]),
        {"tenant": world.tenant_1.pk, "mode": "fresh", "confirmed": "1"},
    )
    built = client.post(
        reverse("panel:builder-preview"),
        json.dumps(
            {
                "request_type": "command",
                "command_type": "sync_account",
                "tenant_id": "tenant_1",
                "account": SAMPLE_ACCOUNT,
            }
        ),
        content_type="application/json",
    )
    send = client.post(
        reverse("panel:builder-send"),
        json.dumps(
            {
                "tenant_id": "tenant_1",
                "method": "POST",
                "path": "/api/v1/mt5/commands",
                "body": built.json()["body"] if built.status_code == 200 else {},
            }
        ),
        content_type="application/json",
    )
    assert (replay.status_code, send.status_code) == ((200, 200) if allowed else (403, 403))
    if allowed:
        assert send.json()["status"] == 202
    assert Command.objects.filter(tenant=world.tenant_1).count() == (3 if allowed else 1)


def test_support_may_preview_in_the_builder_but_not_send(world: World, sue: User) -> None:
    client = logged_in(sue)
    body = {
        "request_type": "command",
        "command_type": "sync_account",
        "tenant_id": "tenant_1",
        "account": {"account_login": 50040367},
    }
    assert (
        client.post(reverse("panel:builder-preview"), json.dumps(body), content_type="application/json").status_code
        == 200
    )
    assert b'"can_send": false' in client.get(reverse("panel:builder")).content


def test_a_scoped_operator_cannot_build_send_or_replay_for_another_tenant(world: World, tess: User) -> None:
    client = logged_in(tess)
    body = {
        "request_type": "command",
        "command_type": "sync_account",
        "tenant_id": "tenant_2",
        "account": {"account_login": 77770002},
    }
    assert (
        client.post(reverse("panel:builder-preview"), json.dumps(body), content_type="application/json").status_code
        == 403
    )
    send = {"tenant_id": "tenant_2", "method": "POST", "path": "/api/v1/mt5/commands", "body": {}}
    assert (
        client.post(reverse("panel:builder-send"), json.dumps(send), content_type="application/json").status_code == 403
    )
    payload = LibraryPayload.objects.get(slug="close_positions")
    response = client.post(
        reverse("admin:panel_librarypayload_replay", args=[payload.pk]), {"tenant": world.tenant_2.pk, "mode": "fresh"}
    )
    assert response.status_code == 200 and b"Select a valid choice" in response.content
    assert Command.objects.filter(tenant=world.tenant_2).count() == 1


def test_the_body_of_a_panel_send_cannot_act_for_a_tenant_other_than_the_one_checked(world: World, tess: User) -> None:
    """The principal is scoped to the checked tenant only, so the intake itself refuses tenant_2's body."""
    from tests.conftest import fresh

    body = fresh("close_positions", tenant_id="tenant_2")
    body["actor"].update(account_login=77770002, server="Other-Server")
    send = {"tenant_id": "tenant_1", "method": "POST", "path": "/api/v1/mt5/commands", "body": body, "confirmed": True}
    response = logged_in(tess).post(reverse("panel:builder-send"), json.dumps(send), content_type="application/json")
    assert response.json()["status"] == 403 and response.json()["body"]["code"] == "tenant_forbidden"


# --- tenant isolation: nothing of tenant_2 reaches tess, on any page she can open ---------------------


def tess_urls(world: World) -> list[str]:
    urls = [changelist(label) for label in OPERATOR_MODELS]
    urls += [
        f"{changelist(label)}?tenant={world.tenant_2.pk}"
        for label in OPERATOR_MODELS - {"policies.monitorheartbeat", "tenancy.tenant", "alerts.alert"}
    ]
    urls += [f"{changelist('commands.command')}?q={T2_COMMAND}", f"{changelist('policies.tradingaccount')}?q=77770002"]
    urls += [change(own) for own, _ in pairs(world).values() if own is not None]
    urls += [reverse(f"panel:{page}") for page in PAGE_ACCESS]
    urls += [
        reverse("admin:index"),
        reverse("admin:panel_librarypayload_add"),
        reverse("admin:policies_tradingaccount_risk", args=[world.account_1.pk]),
        reverse("admin:panel_librarypayload_replay", args=[LibraryPayload.objects.get(slug="close_positions").pk]),
        reverse("admin:autocomplete") + "?app_label=panel&model_name=librarypayload&field_name=tenant&term=tenant",
    ]
    return urls


def test_tess_never_sees_a_trace_of_tenant_2_in_lists_details_filters_searches_or_autocompletes(
    world: World, tess: User
) -> None:
    client = logged_in(tess)
    leaks = {}
    for url in tess_urls(world):
        response = client.get(url)
        assert response.status_code == 200, url
        content = response.content
        if "?q=" in url:  # the search box echoes the term typed: only results would be a leak
            assert not response.context["cl"].result_list, url
            content = content.replace(url.split("?q=")[1].encode(), b"")
        found = [marker for marker in T2_MARKERS if marker.encode() in content]
        if found:
            leaks[url] = found
    assert leaks == {}


def test_the_autocomplete_offers_tess_only_her_tenant(world: World, tess: User) -> None:
    url = reverse("admin:autocomplete") + "?app_label=panel&model_name=librarypayload&field_name=tenant&term=tenant"
    assert [row["text"] for row in logged_in(tess).get(url).json()["results"]] == ["tenant_1"]


@pytest.mark.parametrize(
    "label", ["commands.command", "policies.protectiveaction", "callbacks.callbackdelivery", "policies.tradingaccount"]
)
def test_an_export_holds_only_the_rows_of_the_users_tenants(world: World, tess: User, label: str) -> None:
    model = apps.get_model(label)
    response = logged_in(tess).post(
        changelist(label),
        {
            "action": "export_csv",
            "select_across": "1",
            "index": "0",
            "_selected_action": list(model.objects.values_list("pk", flat=True)),
        },
    )
    assert response.status_code == 200 and response["Content-Type"] == "text/csv"
    body = response.content.decode()
    assert len(body.strip().splitlines()) == 2  # header + tenant_1's row
    assert not [marker for marker in T2_MARKERS if marker in body]


def test_an_operator_without_a_scope_sees_empty_lists(world: World, olaf: User) -> None:
    response = logged_in(olaf).get(changelist("commands.command"))
    assert response.status_code == 200
    assert world.command_1.command_id.encode() not in response.content


def test_a_scoped_operators_new_payload_must_belong_to_her_tenant(world: World, tess: User) -> None:
    client = logged_in(tess)
    data = {"title": "mine", "slug": "mine", "kind": "command", "body": "{}", "tenant": ""}
    response = client.post(reverse("admin:panel_librarypayload_add"), data)
    assert response.status_code == 200 and not LibraryPayload.objects.filter(slug="mine").exists()
    data["tenant"] = world.tenant_2.pk
    client.post(reverse("admin:panel_librarypayload_add"), data)
    assert not LibraryPayload.objects.filter(slug="mine").exists()
    data["tenant"] = world.tenant_1.pk
    assert client.post(reverse("admin:panel_librarypayload_add"), data).status_code == 302
    assert LibraryPayload.objects.get(slug="mine").tenant == world.tenant_1


def test_the_library_shows_shared_examples_and_only_her_tenants_own_payloads(world: World, tess: User) -> None:
    content = logged_in(tess).get(changelist("panel.librarypayload")).content
    assert b"Laravel \xe2\x86\x92 Python: close positions" in content
    assert T2_COMMAND.encode() not in content


def test_the_sidebar_hides_links_a_role_cannot_open(world: World, sue: User) -> None:
    content = logged_in(sue).get(reverse("admin:index")).content
    assert reverse("panel:catalogue").encode() in content
    assert reverse("panel:environment").encode() not in content
    assert changelist("callbacks.callbackdelivery").encode() not in content


def test_counts_of_deliveries_on_the_environment_page_are_scoped(world: World, tess: User) -> None:
    response = logged_in(tess).get(reverse("panel:environment"))
    assert b'id="outbox-dead">1<' in response.content
    assert CallbackDelivery.objects.filter(status=DeliveryStatus.DEAD).count() == 2
