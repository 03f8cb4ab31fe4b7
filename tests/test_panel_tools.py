"""The panel's tools: the payload builder, the test payload library and its replay, and the operator's actions."""

# ruff: noqa: F811  (the personas' fixtures are imported from tests.test_panel_personas, then named as arguments)

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.urls import reverse

from callbacks.models import CallbackDelivery, DeliveryStatus
from commands import examples
from commands.models import Command, CommandEvent
from commands.states import State
from panel.fieldspec import COMMAND_TYPES, command_specific_spec
from panel.models import LibraryPayload, PanelSend
from panel.payloads import (
    COMMAND,
    FLAT_COMMAND,
    POLICY_SNAPSHOT,
    REQUIRED_HEADERS,
    SAMPLE_ACCOUNT,
    SYNC_REQUEST,
    build_request,
    sample_fields,
    validate_request,
)
from panel.services import PanelError, payload_replay
from tenancy.models import ApiToken
from tests.conftest import Api
from tests.test_panel_personas import World, logged_in, oscar, root, tess, world  # noqa: F401  (fixtures)


def built(request_type: str, command_type: str | None = None, **overrides: Any) -> Any:
    fields = {**sample_fields(request_type, command_type), **overrides}
    return build_request(
        request_type=request_type,
        tenant_id="tenant_1",
        account=SAMPLE_ACCOUNT,
        command_type=command_type,
        fields=fields,
    )


def api_headers(request: Any) -> dict[str, str]:
    """The builder's headers as Laravel would send them, with alice's real token."""
    return {name: value for name, value in request.headers.items() if name not in ("Authorization", "Content-Type")}


def preview(client: Any, **body: Any) -> dict[str, Any]:
    response = client.post(reverse("panel:builder-preview"), json.dumps(body), content_type="application/json")
    assert response.status_code == 200, response.content
    return response.json()


def send(client: Any, built_json: dict[str, Any], tenant_id: str = "tenant_1") -> dict[str, Any]:
    """A builder send as the page makes it: asked first (nothing sent), then confirmed."""
    body = {"tenant_id": tenant_id, **{k: built_json[k] for k in ("method", "path", "headers", "body")}}
    sends = PanelSend.objects.count()
    response = client.post(reverse("panel:builder-send"), json.dumps(body), content_type="application/json")
    if built_json["method"] == "POST":
        assert response.status_code == 428, response.content
        assert response.json()["confirm"]["environment"] == "PROD · SIMULATOR"
        assert PanelSend.objects.count() == sends  # nothing sent until confirmed
        body["confirmed"] = True
        response = client.post(reverse("panel:builder-send"), json.dumps(body), content_type="application/json")
    assert response.status_code == 200, response.content
    return response.json()


# --- builder: its output is what the API accepts ------------------------------------------------------


@pytest.mark.parametrize("command_type", COMMAND_TYPES)
def test_every_command_the_builder_makes_is_accepted_by_the_api(alice: Api, account_1: Any, command_type: str) -> None:
    request = built(COMMAND, command_type)
    assert request.errors == []
    response = alice.post("mt5/commands", request.body, headers=api_headers(request))
    assert response.status_code == 202, response.json()
    assert response.json()["command_id"] == request.ids["command_id"]
    assert response["X-Correlation-ID"] == request.ids["correlation_id"]


def test_the_builders_policy_snapshot_and_flat_command_are_accepted_by_the_api(alice: Api) -> None:
    policy = built(POLICY_SNAPSHOT)
    assert alice.post("mt5/policies", policy.body, headers=api_headers(policy)).json()["status"] == "applied"
    flat = built(FLAT_COMMAND, "open_position")
    response = alice.post("mt5/commands", flat.body, headers=api_headers(flat))
    assert response.status_code == 202 and response.json()["idempotency_key"] == flat.body["command_id"]


def test_the_builder_reports_exactly_the_errors_the_api_answers_422_with(alice: Api, account_1: Any) -> None:
    request = built(COMMAND, "close_positions", target={"mode": "by_symbol"}, priority="urgent")
    response = alice.post("mt5/commands", request.body, headers=api_headers(request))
    assert response.status_code == 422
    assert request.errors == response.json()["errors"]
    assert {error["field"] for error in request.errors} == {"payload.target.symbols", "payload.priority"}


def test_the_builder_makes_fresh_uuids_and_utc_timestamps_and_keeps_them_while_editing(
    root: User, world: World
) -> None:
    client = logged_in(root)
    first = preview(
        client, request_type=COMMAND, command_type="close_positions", tenant_id="tenant_1", account=SAMPLE_ACCOUNT
    )
    meta = first["body"]["meta"]
    assert re.fullmatch(r"[0-9a-f-]{36}", meta["request_id"]) and meta["idempotency_key"] != meta["request_id"]
    sent = datetime.fromisoformat(meta["sent_at_utc"].replace("Z", "+00:00"))
    assert meta["sent_at_utc"].endswith("Z") and abs((datetime.now(UTC) - sent).total_seconds()) < 5
    again = preview(
        client,
        request_type=COMMAND,
        command_type="close_positions",
        tenant_id="tenant_1",
        account=SAMPLE_ACCOUNT,
        ids=first["ids"],
    )
    assert again["ids"] == first["ids"]
    other = preview(
        client, request_type=COMMAND, command_type="close_positions", tenant_id="tenant_1", account=SAMPLE_ACCOUNT
    )
    assert other["ids"]["idempotency_key"] != first["ids"]["idempotency_key"]


def test_the_snippets_carry_every_required_header_the_bridge_url_and_the_exact_body(settings: Any) -> None:
    settings.PYTHON_BRIDGE_URL = "https://bridge.example.test"
    request = built(COMMAND, "close_positions")
    curl, powershell = request.curl(), request.powershell()
    for name, _ in REQUIRED_HEADERS:
        assert name in curl and name in powershell.replace("-ContentType", "Content-Type")
    assert (
        "${PYTHON_BRIDGE_URL:-https://bridge.example.test}" in curl
        and '"$PYTHON_BRIDGE_URL/api/v1/mt5/commands"' in curl
    )
    assert "$env:PYTHON_BRIDGE_URL" in powershell and "Invoke-RestMethod" in powershell and "-Method Post" in powershell
    assert json.loads(curl.split("<<'JSON'\n")[1].rsplit("\nJSON", 1)[0]) == request.body
    assert json.loads(powershell.split("@'\n")[1].split("\n'@")[0]) == request.body
    sync = build_request(request_type=SYNC_REQUEST, tenant_id="tenant_1", account=SAMPLE_ACCOUNT)
    assert sync.method == "GET" and sync.path == "/api/v1/mt5/accounts/50040367" and "--data-binary" not in sync.curl()


def test_the_builder_warns_when_the_account_is_not_the_tenants(root: User, world: World) -> None:
    answer = preview(
        logged_in(root),
        request_type=COMMAND,
        command_type="sync_account",
        tenant_id="tenant_1",
        account={**SAMPLE_ACCOUNT, "account_login": 77770002, "server": "Other-Server"},
    )
    assert answer["warnings"] == ["Account 77770002 is not registered for tenant_1: the API will answer 404 or 403."]


def test_sending_from_the_builder_goes_through_the_api_once_and_replays_the_same_key(oscar: User, world: World) -> None:
    client = logged_in(oscar)
    request = preview(
        client,
        request_type=COMMAND,
        command_type="close_positions",
        tenant_id="tenant_1",
        account=SAMPLE_ACCOUNT,
        fields=sample_fields(COMMAND, "close_positions"),
    )
    first = send(client, request)
    assert first["status"] == 202 and not first["replayed"] and first["command_url"]
    second = send(client, request)
    assert second["status"] == 202 and second["replayed"] and second["body"] == first["body"]
    assert Command.objects.filter(command_id=request["ids"]["command_id"]).count() == 1
    assert list(PanelSend.objects.filter(username="oscar").values_list("status", "replayed")) == [
        (202, True),
        (202, False),
    ]


def test_the_builder_page_is_drawn_from_the_apis_serializers(root: User, world: World) -> None:
    config = logged_in(root).get(reverse("panel:builder")).context["builder_config"]
    assert sorted(config["spec"]["commands"]) == sorted(COMMAND_TYPES)
    target = next(field for field in config["spec"]["commands"]["close_positions"] if field["name"] == "target")
    mode = next(field for field in target["fields"] if field["name"] == "mode")
    assert mode["choices"] == ["all_positions", "by_symbol", "by_tickets", "losing", "profitable"]
    # Opened without a choice: a read-only request, never a close-all one click away.
    assert config["initial"] == {
        "request_type": "sync_request",
        "command_type": "sync_account",
        "tenant_id": "tenant_1",
    }
    assert {a["login"] for a in config["accounts"]} == {50040367, 77770002}


# --- the test payload library ------------------------------------------------------------------------


def test_the_panels_examples_are_in_the_library_from_the_first_migration(db: None) -> None:
    library = {p.slug: p for p in LibraryPayload.objects.filter(builtin=True)}
    assert set(library) == {
        "close_positions",
        "policy_snapshot",
        "protective_action_report",
        "open_position",
        "sync_request",
    }
    assert library["close_positions"].body == examples.CLOSE_POSITIONS
    assert library["policy_snapshot"].body == examples.POLICY_SNAPSHOT
    assert library["protective_action_report"].body == examples.PROTECTIVE_ACTION_REPORT
    assert library["open_position"].body == examples.LEGACY_OPEN_POSITION
    assert (library["sync_request"].method, library["sync_request"].path) == ("GET", "/api/v1/mt5/accounts/50040367")
    for slug in ("close_positions", "policy_snapshot"):
        assert validate_request(library[slug].kind, library[slug].body) == []


def replay(user: User, world: World, slug: str, *, same_key: bool) -> Any:
    result, _ = payload_replay(
        user=user, payload=LibraryPayload.objects.get(slug=slug), tenant=world.tenant_1, same_key=same_key
    )
    return result


def test_a_fresh_replay_sends_new_ids_and_utc_timestamps_through_the_intake(oscar: User, world: World) -> None:
    result = replay(oscar, world, "close_positions", same_key=False)
    assert result.status == 202 and result.path == "/api/v1/mt5/commands"
    meta = result.request_body["meta"]
    assert meta["idempotency_key"] != examples.CLOSE_POSITIONS["meta"]["idempotency_key"]
    assert meta["request_id"] != examples.CLOSE_POSITIONS["meta"]["request_id"]
    assert meta["sent_at_utc"].endswith("Z") and meta["sent_at_utc"] != "2026-05-29T12:00:00Z"
    assert result.request_headers["X-Idempotency-Key"] == meta["idempotency_key"]
    command = Command.objects.get(command_id=result.body["command_id"])
    assert command.lane == "fast" and command.idempotency_key == meta["idempotency_key"]
    assert replay(oscar, world, "close_positions", same_key=False).body["command_id"] != command.command_id


@pytest.mark.parametrize(("slug", "created"), [("close_positions", 1), ("open_position", 1), ("policy_snapshot", 0)])
def test_a_replay_with_the_same_key_is_deduplicated_by_the_api(
    oscar: User, world: World, slug: str, created: int
) -> None:
    before = Command.objects.count()
    first = replay(oscar, world, slug, same_key=False)
    assert first.ok and not first.replayed
    second = replay(oscar, world, slug, same_key=True)
    assert second.ok and second.replayed and second.body == first.body
    assert Command.objects.count() == before + created


def test_the_same_key_without_an_earlier_send_uses_the_stored_key(oscar: User, world: World) -> None:
    Command.objects.filter(pk=world.command_1.pk).update(command_id="cmd-from-laravel")
    first = replay(oscar, world, "close_positions", same_key=True)
    again = replay(oscar, world, "close_positions", same_key=True)
    assert first.body["idempotency_key"] == examples.CLOSE_POSITIONS["meta"]["idempotency_key"]
    assert again.replayed and Command.objects.filter(command_id="cmd-10001", tenant=world.tenant_1).count() == 1


def test_the_sync_request_reads_the_account_through_the_api(oscar: User, world: World) -> None:
    from execution.simulator.service import sim_account_create

    sim_account_create(login=examples.DEMO_LOGIN, balance=examples.DEMO_BALANCE, server=examples.DEMO_SERVER)
    result = replay(oscar, world, "sync_request", same_key=False)
    assert (result.method, result.path, result.status) == ("GET", "/api/v1/mt5/accounts/50040367", 200)
    assert result.body["account_login"] == 50040367 and float(result.body["snapshot"]["balance"]) == 100000


def test_the_protective_action_report_goes_through_the_outbox_once_per_key(oscar: User, world: World) -> None:
    first = replay(oscar, world, "protective_action_report", same_key=False)
    assert first.status == 202 and first.body["status"] == "queued"
    delivery = CallbackDelivery.objects.get(pk=first.body["delivery_id"])
    assert delivery.envelope["payload"]["rule_key"] == "single_trade_loss" and delivery.source_kind == "panel"
    second = replay(oscar, world, "protective_action_report", same_key=True)
    assert second.status == 200 and second.replayed and second.body["delivery_id"] == delivery.pk
    assert CallbackDelivery.objects.filter(source_kind="panel").count() == 1


def test_oscars_replays_of_a_report_mint_new_identities_and_never_take_one_a_future_report_could_get(
    oscar: User, world: World
) -> None:
    from panel.services import command_cancel

    # The stored body names the very event a real report is about to be written for.
    future = f"command-result:{world.command_1.pk}"
    payload = LibraryPayload.objects.get(slug="protective_action_report")
    payload.body = {**payload.body, "meta": {**payload.body["meta"], "idempotency_key": future}}
    payload.save(update_fields=["body"])

    same = replay(oscar, world, "protective_action_report", same_key=True)  # before any send: the stored key
    fresh_1 = replay(oscar, world, "protective_action_report", same_key=False)
    fresh_2 = replay(oscar, world, "protective_action_report", same_key=False)
    again = replay(oscar, world, "protective_action_report", same_key=True)  # the last send's callback again
    rows = [CallbackDelivery.objects.get(pk=r.body["delivery_id"]) for r in (same, fresh_1, fresh_2)]
    assert len({row.pk for row in rows}) == 3
    assert len({row.idempotency_key for row in rows}) == 3 and len({row.request_id for row in rows}) == 3
    for row in rows:
        assert uuid.UUID(row.idempotency_key).version == 4 and row.dedup_key.startswith("panel:")
        assert row.envelope["meta"]["idempotency_key"] == row.idempotency_key != future
    assert again.replayed and again.body["delivery_id"] == rows[2].pk
    assert again.body["idempotency_key"] == rows[2].idempotency_key

    # The command's own result is still written when it finishes, under an identity of its own.
    assert command_cancel(user=oscar, command=world.command_1)
    result = CallbackDelivery.objects.get(source_kind="command", source_id=str(world.command_1.pk))
    assert result.dedup_key == future
    assert result.idempotency_key not in {row.idempotency_key for row in rows}


def test_a_tenants_own_payload_cannot_be_replayed_for_another_tenant(root: User, world: World) -> None:
    with pytest.raises(PanelError):
        payload_replay(user=root, payload=world.payload_2, tenant=world.tenant_1, same_key=False)


def test_the_replay_page_shows_the_request_and_the_response(oscar: User, world: World) -> None:
    payload = LibraryPayload.objects.get(slug="close_positions")
    client = logged_in(oscar)
    url = reverse("admin:panel_librarypayload_replay", args=[payload.pk])
    page = client.post(url, {"tenant": world.tenant_1.pk, "mode": "fresh", "confirmed": "1"})
    assert page.status_code == 200 and page.context["result"].status == 202 and page.context["command_url"]
    again = client.post(url, {"tenant": world.tenant_1.pk, "mode": "same", "confirmed": "1"})
    assert b"Idempotent-Replayed: true" in again.content


# --- operators' actions ---------------------------------------------------------------------------


def test_cancelling_moves_a_queued_command_through_the_state_machine_and_tells_laravel(
    oscar: User, world: World
) -> None:
    client = logged_in(oscar)
    url = reverse("admin:commands_command_cancel_detail", args=[world.command_1.pk])
    assert b"Cancel the command" in client.get(url).content  # GET only asks
    world.command_1.refresh_from_db()
    assert world.command_1.state == State.QUEUED
    client.post(url)
    world.command_1.refresh_from_db()
    assert world.command_1.state == State.CANCELLED and world.command_1.finished_at is not None
    event = world.command_1.events.order_by("-id").first()
    assert (event.from_state, event.to_state, event.note) == ("queued", "cancelled", "cancelled in the panel by oscar")
    result = CallbackDelivery.objects.get(source_kind="command", source_id=str(world.command_1.pk))
    assert result.envelope["payload"]["state"] == "cancelled"


def test_a_command_already_executing_is_not_cancelled(oscar: User, world: World) -> None:
    Command.objects.filter(pk=world.command_1.pk).update(state=State.EXECUTING)
    logged_in(oscar).post(reverse("admin:commands_command_cancel_detail", args=[world.command_1.pk]))
    world.command_1.refresh_from_db()
    assert world.command_1.state == State.EXECUTING


def test_a_resend_puts_a_dead_letter_back_in_the_outbox(oscar: User, world: World) -> None:
    logged_in(oscar).post(reverse("admin:callbacks_callbackdelivery_resend_detail", args=[world.delivery_1.pk]))
    world.delivery_1.refresh_from_db()
    assert world.delivery_1.status == DeliveryStatus.PENDING and world.delivery_1.dead_at is None


def test_a_created_token_is_shown_once_works_and_is_stored_only_as_a_hash(
    root: User, world: World, client: Any
) -> None:
    admin_client = logged_in(root)
    page = admin_client.post(
        reverse("admin:tenancy_apitoken_add"), {"name": "laravel prod", "tenants": [world.tenant_1.pk]}
    )
    raw = re.search(rb"mt5b_[A-Za-z0-9_-]{20,}", page.content).group().decode()
    token = ApiToken.objects.get(name="laravel prod")
    assert token.key_hash != raw and raw not in str(ApiToken.objects.filter(pk=token.pk).values().get())
    assert raw.encode() not in admin_client.get(reverse("admin:tenancy_apitoken_change", args=[token.pk])).content
    assert Api(client, raw).get("mt5/commands").status_code == 200


def test_a_scoped_operator_creating_a_token_would_only_see_her_tenants(tess: User, world: World) -> None:
    # Operators hold no add permission for tokens; the choices would be scoped all the same.
    from django.contrib.admin import site

    from panel.admin.tenancy import ApiTokenAdmin

    class Request:
        user = tess

    field = ApiToken._meta.get_field("tenants")
    queryset = ApiTokenAdmin(ApiToken, site).get_field_queryset(None, field, Request())
    assert list(queryset) == [world.tenant_1]


def test_the_command_page_shows_the_timeline_every_attempt_and_the_envelope(root: User, world: World) -> None:
    CommandEvent.objects.create(
        command=world.command_1,
        kind=CommandEvent.Kind.ATTEMPT,
        attempt=1,
        request={"action": "TRADE_ACTION_DEAL", "position": 555111},
        response={"retcode": 10009, "comment": "done"},
    )
    content = logged_in(root).get(reverse("admin:commands_command_change", args=[world.command_1.pk])).content.decode()
    assert "received → queued" in content.replace("&rarr;", "→")
    assert "TRADE_ACTION_DEAL" in content and "10009" in content
    assert "&quot;correlation_group&quot;: &quot;risk-control&quot;" in content  # the raw envelope, pretty-printed


def test_the_protective_action_page_shows_the_numbers_the_command_and_the_reports_delivery(
    root: User, world: World
) -> None:
    client = logged_in(root)
    content = client.get(reverse("admin:policies_protectiveaction_change", args=[world.action_1.pk])).content.decode()
    assert world.command_1.command_id in content and world.delivery_1.idempotency_key in content
    assert "93,575.00" in content and "close_all" in content and "EURUSD" in content
    assert "93575.00000000" not in content  # money in the currency digits, never the column's 8 decimals
    rows = client.get(reverse("admin:policies_protectiveaction_changelist")).context["cl"].result_list
    assert {row.pk: row.report_status for row in rows} == {world.action_1.pk: "dead", world.action_2.pk: "dead"}


def test_a_policy_snapshot_shows_its_difference_from_the_previous_version(alice: Api, root: User, world: World) -> None:
    from panel.admin.policy_snapshots import policy_diff
    from policies.models import PolicySnapshot

    policy = built(POLICY_SNAPSHOT, policy_version=13, max_daily_dd_pct=4)
    assert alice.post("mt5/policies", policy.body).json()["status"] == "applied"
    previous, current = (PolicySnapshot.objects.get(account=world.account_1, policy_version=v) for v in (12, 13))
    assert [(key, change) for key, _, _, change in policy_diff(previous.payload, current.payload)] == [
        ("max_daily_dd_pct", "changed"),
        ("policy_version", "changed"),
    ]
    content = logged_in(root).get(reverse("admin:policies_policysnapshot_change", args=[current.pk])).content.decode()
    assert "Compared with" in content and "version 12" in content and "<td>changed</td>" in content


def test_the_type_specific_fields_of_the_spec_are_the_request_models_own() -> None:
    from commands.schema import COMMON_FIELDS, PAYLOAD_MODELS

    for command_type in COMMAND_TYPES:
        assert [f["name"] for f in command_specific_spec(command_type)] == [
            name for name in PAYLOAD_MODELS[command_type].model_fields if name not in COMMON_FIELDS
        ]
    assert [f["name"] for f in command_specific_spec("close_position")] == ["ticket", "volume"]
