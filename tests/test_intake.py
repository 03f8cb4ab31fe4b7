"""The envelope intake API of PROTOCOL.md §1–6, through HTTP against the real database."""

from __future__ import annotations

import copy
import json
import re
import uuid
from typing import Any

import pytest
from django.db import transaction
from django.forms.models import model_to_dict

from commands import examples
from commands.models import Command, CommandEvent, IdempotencyRecord
from commands.states import State
from policies.models import PolicySnapshot, TradingAccount
from tests.conftest import fresh, register_account

pytestmark = pytest.mark.django_db


def problem(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/problem+json"
    body = response.json()
    assert body["code"] == code
    assert body["status"] == status
    assert {"type", "title", "detail", "correlation_id", "errors"} <= set(body)
    return body


# --- the panel's examples verbatim -----------------------------------------------------------


def test_the_panels_close_positions_example_is_accepted_on_the_fast_lane(alice, account_1):
    response = alice.post("mt5/commands", examples.CLOSE_POSITIONS)
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["status"] == "accepted"
    assert body["command_id"] == "cmd-10001"
    assert body["state"] == "queued"
    assert body["lane"] == "fast"
    assert body["idempotency_key"] == "f1f2f3f4-5555-6666-7777-888888888888"
    assert body["correlation_id"] == "9f8e7d6c-aaaa-bbbb-cccc-123456789000"
    assert body["received_at_utc"].endswith("Z")
    command = Command.objects.get(command_id="cmd-10001")
    assert command.state == State.QUEUED
    assert list(command.events.values_list("to_state", flat=True)) == ["received", "queued"]


def test_the_panels_policy_snapshot_registers_the_account_and_applies(alice):
    response = alice.post("mt5/policies", examples.POLICY_SNAPSHOT)
    assert response.status_code == 200, response.content
    assert response.json() == {"status": "applied", "account_login": 50040367, "policy_version": 12}
    account = TradingAccount.objects.get(login=50040367)
    assert account.tenant.tenant_id == "tenant_1"
    assert account.current_policy.payload["max_daily_dd_pct"] == "5"


def test_the_powershell_flat_open_position_is_accepted_with_command_id_as_key(alice, account_1):
    response = alice.post("mt5/commands", examples.LEGACY_OPEN_POSITION)
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["lane"] == "normal"
    assert body["idempotency_key"] == examples.LEGACY_OPEN_POSITION["command_id"]
    command = Command.objects.get(command_id=examples.LEGACY_OPEN_POSITION["command_id"])
    assert command.payload["volume"] == "0.1"
    assert command.payload["symbol"] == "EURUSD"


def test_ingest_routes_commands_and_policies_by_request_type(alice):
    assert alice.post("ingest", fresh("policy_snapshot")).status_code == 200
    response = alice.post("ingest", fresh("close_positions"))
    assert response.status_code == 202
    assert response.json()["lane"] == "fast"


def test_a_report_type_is_not_accepted_inbound(alice, account_1):
    body = problem(alice.post("ingest", fresh("protective_action_report")), 422, "validation_failed")
    assert body["errors"][0]["field"] == "request.type"


# --- authentication (401) --------------------------------------------------------------------


def test_no_token_is_401_with_www_authenticate(charlie, account_1):
    response = charlie.post("mt5/commands", examples.CLOSE_POSITIONS)
    problem(response, 401, "authentication_failed")
    assert response["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("header", ["Bearer", "Basic abc", "Bearer nope-not-a-token", "token abc"])
def test_a_malformed_or_unknown_token_is_401(client, account_1, header):
    response = client.post(
        "/api/v1/mt5/commands",
        data=json.dumps(examples.CLOSE_POSITIONS),
        content_type="application/json",
        headers={"Authorization": header},
    )
    problem(response, 401, "authentication_failed")


def test_a_revoked_token_is_401(alice, account_1, settings):
    from tenancy.models import ApiToken

    settings.API_TOKEN_CACHE_SECONDS = 0  # no process remembers the token: its revocation applies at once
    assert alice.post("mt5/commands", fresh("close_positions")).status_code == 202
    ApiToken.objects.get(name="alice").revoke()
    problem(alice.post("mt5/commands", fresh("close_positions")), 401, "authentication_failed")


def test_the_ingest_token_from_the_environment_acts_for_its_tenants(client, settings, account_1):
    settings.PYTHON_INGEST_TOKEN = "env-secret-token"
    settings.PYTHON_INGEST_TENANTS = ["tenant_1"]
    response = client.post(
        "/api/v1/mt5/commands",
        data=json.dumps(fresh("close_positions")),
        content_type="application/json",
        headers={"Authorization": "Bearer env-secret-token"},
    )
    assert response.status_code == 202


def test_tokens_are_stored_only_as_hashes(tenant_1):
    from tenancy.models import ApiToken

    token = ApiToken.objects.get(name="alice")
    assert token.key_hash != "alice-token-tenant-1"
    assert len(token.key_hash) == 64


def test_last_used_time_is_recorded(alice, account_1):
    from tenancy.models import ApiToken

    alice.get("mt5/commands")
    assert ApiToken.objects.get(name="alice").last_used_at is not None


# --- tenancy (403) ---------------------------------------------------------------------------


def test_a_tenant_outside_the_tokens_scope_is_403(bob, account_1):
    problem(bob.post("mt5/commands", fresh("close_positions")), 403, "tenant_forbidden")


def test_another_tenant_naming_the_account_is_403(bob, account_1):
    body = fresh("close_positions", tenant_id="tenant_2")
    problem(bob.post("mt5/commands", body), 403, "tenant_forbidden")
    assert not Command.objects.exists()


def test_another_tenant_cannot_take_over_an_account_with_a_snapshot(bob, account_1):
    body = fresh("policy_snapshot", tenant_id="tenant_2")
    body["payload"]["policy_version"] = 99
    problem(bob.post("mt5/policies", body), 403, "tenant_forbidden")
    assert TradingAccount.objects.get(login=50040367).current_policy.policy_version == 12


def test_another_tenant_cannot_read_the_command(alice, bob, account_1):
    alice.post("mt5/commands", examples.CLOSE_POSITIONS)
    problem(bob.get("mt5/commands/cmd-10001"), 403, "tenant_forbidden")
    assert alice.get("mt5/commands/cmd-10001").status_code == 200


def test_another_tenant_cannot_list_the_accounts_commands(alice, bob, account_1):
    alice.post("mt5/commands", examples.CLOSE_POSITIONS)
    problem(bob.get("mt5/commands", account_login=50040367), 403, "tenant_forbidden")
    assert bob.get("mt5/commands").json()["results"] == []


def test_the_flat_form_naming_another_tenants_login_is_403(bob, account_1):
    body = copy.deepcopy(examples.LEGACY_OPEN_POSITION)
    body["tenant_id"] = "tenant_2"
    problem(bob.post("mt5/commands", body), 403, "tenant_forbidden")


def test_a_multi_tenant_token_must_name_its_tenant_on_reads(client, tenant_1, tenant_2):
    from tenancy.services import token_create

    token_create(tenant_ids=["tenant_1", "tenant_2"], name="ops", raw="ops-token")
    headers = {"Authorization": "Bearer ops-token"}
    problem(client.get("/api/v1/mt5/commands", headers=headers), 400, "tenant_required")
    ok = client.get("/api/v1/mt5/commands", headers={**headers, "X-Tenant-ID": "tenant_2"})
    assert ok.status_code == 200
    problem(client.get("/api/v1/mt5/commands", headers={**headers, "X-Tenant-ID": "tenant_9"}), 403, "tenant_forbidden")


# --- transport and headers -------------------------------------------------------------------


def test_a_body_that_is_not_json_content_type_is_415(alice, account_1):
    problem(
        alice.post("mt5/commands", "a=b", content_type="application/x-www-form-urlencoded"),
        415,
        "unsupported_media_type",
    )


def test_a_body_over_256_kib_is_413(alice, account_1):
    body = fresh("close_positions")
    body["padding"] = "x" * (256 * 1024)
    problem(alice.post("mt5/commands", body), 413, "payload_too_large")


@pytest.mark.parametrize("raw", ['{"meta": ', '{"a": NaN}', '{"a": Infinity}', "[" * 100 + "]" * 100])
def test_malformed_or_non_strict_json_is_400(alice, account_1, raw):
    problem(alice.post("mt5/commands", raw), 400, "malformed_json")


@pytest.mark.parametrize(("depth", "status"), [(32, 422), (33, 400)])
def test_nesting_is_allowed_to_32_levels(alice, account_1, depth, status):
    nested = "[" * (depth - 1) + "{}" + "]" * (depth - 1)
    assert alice.post("mt5/commands", nested).status_code == status


def test_a_json_array_body_is_422(alice, account_1):
    problem(alice.post("mt5/commands", [1, 2]), 422, "validation_failed")


@pytest.mark.parametrize("command_type", [["open_position"], {"a": 1}, 7, None])
def test_a_command_type_that_is_no_string_is_one_validation_error_not_a_500(alice, account_1, command_type):
    body = fresh("close_positions")
    body["payload"]["command_type"] = command_type
    response = problem(alice.post("mt5/commands", body), 422, "validation_failed")
    assert [error["field"] for error in response["errors"]] == ["payload.command_type"]


def test_another_protocol_major_version_is_400(alice, account_1):
    problem(
        alice.post("mt5/commands", fresh("close_positions"), {"X-Protocol-Version": "2"}),
        400,
        "unsupported_protocol_version",
    )
    assert alice.post("mt5/commands", fresh("close_positions"), {"X-Protocol-Version": "1"}).status_code == 202


def test_meta_protocol_version_must_be_1_x(alice, account_1):
    body = problem(
        alice.post("mt5/commands", fresh("close_positions", protocol_version="2.0")), 422, "validation_failed"
    )
    assert body["errors"] == [{"field": "meta.protocol_version", "message": "Must be 1.x."}]


def test_the_correlation_id_header_is_echoed(alice, account_1):
    response = alice.post("mt5/commands", fresh("close_positions"), {"X-Correlation-ID": "corr-abc"})
    assert response["X-Correlation-ID"] == "corr-abc"
    assert response.json()["correlation_id"] == "corr-abc"


def test_a_missing_correlation_id_is_taken_from_meta_or_generated(alice, account_1):
    body = fresh("close_positions")
    response = alice.post("mt5/commands", body)
    assert response["X-Correlation-ID"] == body["meta"]["correlation_id"]
    health = alice.get("health")
    assert uuid.UUID(health["X-Correlation-ID"])


def test_errors_carry_the_correlation_id(charlie, db):
    response = charlie.post("mt5/commands", {}, {"X-Correlation-ID": "corr-401"})
    assert response.json()["correlation_id"] == "corr-401"


def test_an_unknown_path_is_a_problem_404(alice):
    problem(alice.get("nope"), 404, "not_found")


# --- idempotency ------------------------------------------------------------------------------


def test_a_repeated_key_replays_the_stored_response_without_a_second_command(alice, account_1):
    first = alice.post("mt5/commands", examples.CLOSE_POSITIONS)
    again = alice.post("mt5/commands", examples.CLOSE_POSITIONS)
    assert again.status_code == 202
    assert again.json() == first.json()
    assert again["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first
    assert Command.objects.count() == 1
    assert CommandEvent.objects.count() == 2


def test_a_retry_with_a_fresh_request_id_and_send_time_still_replays(alice, account_1):
    alice.post("mt5/commands", examples.CLOSE_POSITIONS)
    retry = copy.deepcopy(examples.CLOSE_POSITIONS)
    retry["meta"]["request_id"] = str(uuid.uuid4())
    retry["meta"]["sent_at_utc"] = "2026-05-29T12:00:05Z"
    response = alice.post("mt5/commands", retry)
    assert response["Idempotent-Replayed"] == "true"
    assert Command.objects.count() == 1


def test_a_key_reused_with_another_payload_is_422(alice, account_1):
    alice.post("mt5/commands", examples.CLOSE_POSITIONS)
    other = copy.deepcopy(examples.CLOSE_POSITIONS)
    other["payload"]["reason"] = "something else"
    problem(alice.post("mt5/commands", other), 422, "idempotency_key_reused")
    assert Command.objects.count() == 1


def test_keys_are_scoped_per_tenant(alice, bob, account_1, tenant_2):
    register_account(tenant_2, login=777, server="Other")
    alice.post("mt5/commands", examples.CLOSE_POSITIONS)
    body = copy.deepcopy(examples.CLOSE_POSITIONS)
    body["meta"]["tenant_id"] = "tenant_2"
    body["actor"].update(account_login=777, server="Other")
    assert bob.post("mt5/commands", body).status_code == 202
    assert Command.objects.count() == 2


def test_a_command_id_used_under_another_key_is_409(alice, account_1):
    alice.post("mt5/commands", examples.CLOSE_POSITIONS)
    problem(alice.post("mt5/commands", fresh("close_positions")), 409, "duplicate_command_id")


def test_the_header_key_and_meta_key_must_agree(alice, account_1):
    problem(
        alice.post("mt5/commands", fresh("close_positions"), {"X-Idempotency-Key": "other"}),
        400,
        "idempotency_key_mismatch",
    )


def test_the_header_key_alone_is_enough(alice, account_1):
    body = fresh("close_positions")
    del body["meta"]["idempotency_key"]
    response = alice.post("mt5/commands", body, {"X-Idempotency-Key": "header-key-1"})
    assert response.json()["idempotency_key"] == "header-key-1"


def test_no_key_from_any_source_is_400(alice, account_1):
    body = fresh("close_positions")
    del body["meta"]["idempotency_key"]
    problem(alice.post("mt5/commands", body), 400, "idempotency_key_required")


@pytest.mark.parametrize("key", ["", "x" * 256, "clé-unicode", "tab\tkey"])
def test_an_invalid_key_is_400(alice, account_1, key):
    body = fresh("close_positions", idempotency_key=key)
    problem(alice.post("mt5/commands", body), 400, "invalid_idempotency_key")


def test_validation_failures_are_not_stored_so_the_client_can_fix_and_retry(alice, account_1):
    body = fresh("close_positions")
    body["payload"]["target"]["mode"] = "everything"
    problem(alice.post("mt5/commands", body), 422, "validation_failed")
    assert not IdempotencyRecord.objects.exists()
    body["payload"]["target"]["mode"] = "all_positions"
    assert alice.post("mt5/commands", body).status_code == 202


def test_the_prune_command_deletes_expired_records(alice, account_1):
    from datetime import timedelta

    from django.core.management import call_command
    from django.utils import timezone

    alice.post("mt5/commands", examples.CLOSE_POSITIONS)
    alice.post(
        "mt5/commands",
        fresh(
            "close_positions",
        )
        | {"payload": {**examples.CLOSE_POSITIONS["payload"], "command_id": "c2"}},
    )
    IdempotencyRecord.objects.filter(key=examples.CLOSE_POSITIONS["meta"]["idempotency_key"]).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    call_command("prune_idempotency")
    assert IdempotencyRecord.objects.count() == 1


# --- validation (422) -------------------------------------------------------------------------


def test_missing_envelope_parts_give_one_error_per_field(alice, account_1):
    body = fresh("close_positions")
    del body["actor"]["server"]
    body["meta"]["request_id"] = "not-a-uuid"
    body["context"] = {}
    errors = problem(alice.post("mt5/commands", body), 422, "validation_failed")["errors"]
    fields = {error["field"] for error in errors}
    assert {"actor.server", "meta.request_id", "context.session_id", "context.correlation_group"} <= fields


def test_unknown_keys_are_ignored(alice, account_1):
    body = fresh("close_positions")
    body["future_part"] = {"x": 1}
    body["meta"]["new_meta_key"] = "y"
    assert alice.post("mt5/commands", body).status_code == 202


@pytest.mark.parametrize(
    ("command_type", "payload", "bad_field"),
    [
        ("open_position", {"symbol": "EURUSD", "direction": "up", "volume": 0.1}, "payload.direction"),
        ("open_position", {"symbol": "EURUSD", "direction": "buy", "volume": -1}, "payload.volume"),
        ("open_position", {"symbol": "EURUSD", "direction": "buy", "volume": "0.1"}, "payload.volume"),
        ("open_position", {"direction": "buy", "volume": 0.1}, "payload.symbol"),
        ("close_position", {"ticket": "abc"}, "payload.ticket"),
        ("close_position", {"ticket": 1.5}, "payload.ticket"),
        ("close_positions", {"target": {"mode": "by_symbol"}}, "payload.target.symbols"),
        ("close_positions", {"target": {"mode": "by_tickets", "tickets": [0]}}, "payload.target.tickets[0]"),
        ("modify_position", {"ticket": 5}, "payload.stop_loss"),
        ("cancel_orders", {"tickets": ["x"]}, "payload.tickets[0]"),
        ("teleport", {}, "payload.command_type"),
    ],
)
def test_each_command_types_payload_is_validated(alice, account_1, command_type, payload, bad_field):
    body = fresh("close_positions")
    body["payload"] = {"command_id": "c-1", "command_type": command_type, **payload}
    errors = problem(alice.post("mt5/commands", body), 422, "validation_failed")["errors"]
    assert bad_field in {error["field"] for error in errors}


@pytest.mark.parametrize(
    "command_type,payload",
    [
        ("open_position", {"symbol": "EURUSD", "direction": "sell", "volume": 1, "max_slippage_points": 20}),
        ("close_position", {"ticket": 555111, "volume": 0.5}),
        ("close_positions", {"target": {"mode": "by_symbol", "symbols": ["EURUSD"]}}),
        ("close_positions", {"target": {"mode": "by_tickets", "tickets": [1, 2]}}),
        ("close_positions", {"target": {"mode": "losing"}}),
        ("modify_position", {"ticket": 5, "stop_loss": 1.07}),
        ("cancel_orders", {}),
        ("disable_trading", {}),
        ("enable_trading", {}),
        ("sync_account", {}),
    ],
)
def test_every_command_type_is_accepted(alice, account_1, command_type, payload):
    body = fresh("close_positions")
    body["payload"] = {"command_id": f"c-{command_type}", "command_type": command_type, "priority": "normal", **payload}
    response = alice.post("mt5/commands", body)
    assert response.status_code == 202, response.content
    assert response.json()["lane"] == "normal"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_daily_dd_pct", 101),
        ("max_total_dd_pct", -1),
        ("drawdown_type", "vibes"),
        ("daily_starting_balance_date", "29/05/2026"),
        ("policy_version", 12.5),
        ("policy_version", "12"),
        ("lock_trailing_drawdown", "yes"),
        ("initial_balance_snapshot", None),
    ],
)
def test_each_policy_field_is_validated(alice, field, value):
    body = fresh("policy_snapshot")
    body["payload"][field] = value
    errors = problem(alice.post("mt5/policies", body), 422, "validation_failed")["errors"]
    assert f"payload.{field}" in {error["field"] for error in errors}


def test_a_command_for_an_unregistered_account_is_404(alice, tenant_1):
    problem(alice.post("mt5/commands", fresh("close_positions")), 404, "account_not_found")


# --- UTC --------------------------------------------------------------------------------------


def test_timestamps_with_an_offset_come_back_in_utc(alice, account_1):
    body = fresh("close_positions")
    body["payload"]["expires_at_utc"] = "2026-05-29T14:30:00+02:00"
    alice.post("mt5/commands", body)
    detail = alice.get(f"mt5/commands/{body['payload']['command_id']}").json()
    assert detail["expires_at_utc"] == "2026-05-29T12:30:00.000Z"  # RFC 3339, milliseconds (PROTOCOL §9)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", detail["received_at_utc"])


# --- policies ---------------------------------------------------------------------------------


def test_a_higher_policy_version_applies_and_history_is_kept(alice, account_1):
    body = fresh("policy_snapshot")
    body["payload"]["policy_version"] = 13
    assert alice.post("mt5/policies", body).json()["status"] == "applied"
    assert PolicySnapshot.objects.filter(account=account_1).count() == 2
    assert TradingAccount.objects.get(pk=account_1.pk).current_policy.policy_version == 13


def test_the_same_version_with_the_same_payload_is_unchanged(alice, account_1):
    response = alice.post("mt5/policies", fresh("policy_snapshot"))
    assert response.status_code == 200
    assert response.json()["status"] == "unchanged"


def test_the_same_version_with_another_payload_is_409(alice, account_1):
    body = fresh("policy_snapshot")
    body["payload"]["max_daily_dd_pct"] = 4
    problem(alice.post("mt5/policies", body), 409, "policy_version_conflict")


def test_an_older_version_is_409_and_changes_nothing(alice, account_1):
    body = fresh("policy_snapshot")
    body["payload"]["policy_version"] = 11
    problem(alice.post("mt5/policies", body), 409, "stale_policy_version")
    assert TradingAccount.objects.get(pk=account_1.pk).current_policy.policy_version == 12


# --- reads ------------------------------------------------------------------------------------


def test_one_command_shows_state_lane_attempts_and_timeline(alice, account_1):
    alice.post("mt5/commands", examples.CLOSE_POSITIONS)
    body = alice.get("mt5/commands/cmd-10001").json()
    assert body["state"] == "queued"
    assert body["lane"] == "fast"
    assert body["attempts"] == 0
    assert [event["to_state"] for event in body["events"]] == ["received", "queued"]


def test_an_unknown_command_is_404(alice, account_1):
    problem(alice.get("mt5/commands/nope"), 404, "command_not_found")


def test_the_list_is_newest_first_filtered_and_cursor_paginated(alice, account_1):
    for index in range(5):
        body = fresh("close_positions")
        body["payload"]["command_id"] = f"c-{index}"
        alice.post("mt5/commands", body)
    page = alice.get("mt5/commands", page_size=2, account_login=50040367, state="queued").json()
    assert [c["command_id"] for c in page["results"]] == ["c-4", "c-3"]
    following = alice.client.get(page["next"], headers=alice.headers()).json()
    assert [c["command_id"] for c in following["results"]] == ["c-2", "c-1"]
    assert alice.get("mt5/commands", state="failed").json()["results"] == []
    problem(alice.get("mt5/commands", state="bogus"), 422, "validation_failed")
    problem(alice.get("mt5/commands", since="yesterday"), 422, "validation_failed")


def test_an_unknown_or_misspelt_list_filter_is_422_naming_it_instead_of_listing_everything(alice, account_1):
    alice.post("mt5/commands", examples.CLOSE_POSITIONS)
    body = problem(alice.get("mt5/commands", acount_login=50040367), 422, "validation_failed")
    assert body["errors"] == [{"field": "acount_login", "message": "Not a query parameter of this endpoint."}]
    empty_name = alice.client.get("/api/v1/mt5/commands?=false", headers=alice.headers())
    assert problem(empty_name, 422, "validation_failed")["errors"][0]["field"] == "(empty name)"
    assert len(alice.get("mt5/commands", account_login=50040367).json()["results"]) == 1


def test_health_reports_each_check_and_queue_depth(alice, account_1):
    alice.post("mt5/commands", examples.CLOSE_POSITIONS)
    response = alice.client.get("/api/v1/health")
    assert response.status_code == 503  # no fast-lane worker runs here: no protective close could
    body = response.json()
    assert body["status"] == "down"
    assert body["checks"]["fast_lane"]["status"] == "down"
    assert body["checks"]["fast_lane"]["workers_alive"] == 0
    assert body["checks"]["database"]["status"] == "ok"
    assert body["checks"]["fast_lane"]["queue_depth"] == 1
    assert body["checks"]["normal_lane"]["queue_depth"] == 0


def test_the_openapi_document_validates(client, db):
    from openapi_spec_validator import validate

    response = client.get("/api/v1/schema", headers={"Accept": "application/json"})
    assert response.status_code == 200
    document = (
        json.loads(response.content)
        if response["Content-Type"].startswith("application/json")
        else __import__("yaml").safe_load(response.content)
    )
    validate(document)
    paths = document["paths"]
    for path in [
        "/api/v1/ingest",
        "/api/v1/mt5/commands",
        "/api/v1/mt5/commands/{command_id}",
        "/api/v1/mt5/policies",
        "/api/v1/health",
    ]:
        assert path in paths
    assert {"400", "401", "403", "409", "413", "415", "422"} <= set(paths["/api/v1/mt5/commands"]["post"]["responses"])


def test_a_replay_served_by_another_process_still_replays_from_the_database(alice, account_1):
    from commands.idempotency import forget_all

    first = alice.post("mt5/commands", examples.CLOSE_POSITIONS)
    forget_all()  # as if the retry reached another web worker
    again = alice.post("mt5/commands", examples.CLOSE_POSITIONS)
    assert again["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    forget_all()
    other = copy.deepcopy(examples.CLOSE_POSITIONS)
    other["payload"]["command_id"] = "cmd-other"
    problem(alice.post("mt5/commands", other), 422, "idempotency_key_reused")
    assert list(Command.objects.values_list("command_id", flat=True)) == ["cmd-10001"]


def test_a_process_remembers_only_its_latest_responses_and_replays_older_keys_from_the_database(
    alice, account_1, monkeypatch
):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from commands import idempotency

    monkeypatch.setattr(idempotency, "REMEMBER_AT_MOST", 2)
    bodies = [fresh("close_positions") for _ in range(3)]
    for body in bodies:
        body["payload"]["command_id"] = body["meta"]["idempotency_key"]
    answers = [alice.post("mt5/commands", body).json() for body in bodies]

    def replay_reads_the_database(n: int) -> bool:
        """Replay request n; whether its stored response had to be read from the database."""
        with CaptureQueriesContext(connection) as queries:
            again = alice.post("mt5/commands", bodies[n])
        assert again["Idempotent-Replayed"] == "true"
        assert again.json() == answers[n]
        return any(IdempotencyRecord._meta.db_table in query["sql"] for query in queries.captured_queries)

    # Remembered: the two latest, oldest first.
    assert [replay_reads_the_database(n) for n in (1, 2, 0)] == [False, False, True]
    # Read again, 0 is remembered as the latest, and 1 (then the oldest) is forgotten.
    assert [replay_reads_the_database(n) for n in (0, 2, 1)] == [False, False, True]
    # ... and 1, read again, took the place of 2, the oldest, not of 0.
    assert [replay_reads_the_database(n) for n in (0, 1, 2)] == [False, False, True]
    assert Command.objects.count() == 3


def test_a_policy_replay_from_another_process_returns_the_first_answer(alice):
    from commands.idempotency import forget_all

    body = fresh("policy_snapshot")
    assert alice.post("mt5/policies", body).json()["status"] == "applied"
    newer = fresh("policy_snapshot")
    newer["payload"]["policy_version"] = 13
    alice.post("mt5/policies", newer)
    forget_all()
    again = alice.post("mt5/policies", body)
    assert again.status_code == 200
    assert again["Idempotent-Replayed"] == "true"
    assert again.json()["status"] == "applied"
    assert PolicySnapshot.objects.count() == 2


def _doorbells() -> list[tuple[str, dict[str, Any]]]:
    from django_q.models import OrmQ
    from django_q.signing import SignedPackage

    return [(row.key, SignedPackage.loads(row.payload)) for row in OrmQ.objects.order_by("id")]


def _accepted_rows(command_id: str, doorbells: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    from commands.models import Command, IdempotencyRecord

    command = Command.objects.get(command_id=command_id)
    row = {
        k: v
        for k, v in model_to_dict(command).items()
        if k not in {"id", "command_id", "idempotency_key", "envelope", "received_at", "queued_at", "updated_at"}
    }
    events = list(command.events.values("kind", "from_state", "to_state", "note", "attempt", "request", "response"))
    times = {command.received_at, command.queued_at, command.updated_at, *command.events.values_list("at", flat=True)}
    record = IdempotencyRecord.objects.get(key=command.idempotency_key)
    stored = model_to_dict(record, exclude=["id", "key", "fingerprint", "created_at", "completed_at", "expires_at"])
    own = {"command_id", "idempotency_key", "received_at_utc"}
    stored["response_body"] = {k: v for k, v in record.response_body.items() if k not in own}
    # The doorbells its acceptance rang (on the ORM broker): they name the command's lane.
    tasks = [(key, {k: v for k, v in task.items() if k not in {"id", "started"}}) for key, task in doorbells]
    return {"command": row, "events": events, "one_time": len(times), "record": stored, "tasks": tasks}


@pytest.mark.parametrize("lane", ["fast", "normal"])
def test_the_single_statement_acceptance_writes_what_the_transaction_writes(alice, account_1, monkeypatch, lane):
    from django.db import connection

    body = examples.example("close_positions")
    if lane == "normal":
        body["payload"].update(priority="normal", fast_lane=False)
    body["payload"]["command_id"] = "one-statement"
    body["meta"]["idempotency_key"] = "one-statement"
    assert alice.post("mt5/commands", body).status_code == 202
    rung_by_statement = _doorbells()
    monkeypatch.setattr(connection, "vendor", "sqlite")  # the embedded default's path: ORM writes in a transaction
    body["payload"]["command_id"] = "one-transaction"
    body["meta"]["idempotency_key"] = "one-transaction"
    assert alice.post("mt5/commands", body).status_code == 202
    monkeypatch.undo()
    rung_by_transaction = _doorbells()[len(rung_by_statement) :]

    statement = _accepted_rows("one-statement", rung_by_statement)
    orm = _accepted_rows("one-transaction", rung_by_transaction)
    assert statement == orm
    assert statement["one_time"] == 1
    assert statement["command"]["lane"] == lane
    assert [e["to_state"] for e in statement["events"]] == ["received", "queued"]
    queue = {"fast": "fastlane", "normal": "normal"}[lane]
    assert statement["tasks"] == [
        (
            queue,
            {
                "name": f"{lane} lane",
                "func": "execution.tasks.run_lane",
                "args": (lane,),
                "group": lane,
                "cluster": "fastlane" if lane == "fast" else None,
                "kwargs": {},
                "ack_failure": True,
            },
        )
    ]


def test_a_command_id_reused_under_another_key_is_409_on_the_single_statement_path(alice, account_1):
    body = examples.example("close_positions")
    assert alice.post("mt5/commands", body).status_code == 202
    body["meta"]["idempotency_key"] = "another-key"
    response = alice.post("mt5/commands", body)
    assert response.status_code == 409
    assert response.json()["code"] == "duplicate_command_id"
    assert Command.objects.filter(command_id=body["payload"]["command_id"]).count() == 1


@pytest.mark.parametrize("lane", ["fast", "normal"])
def test_the_single_statement_creation_of_a_bridge_command_writes_what_the_transaction_writes(
    account_1, monkeypatch, lane
):
    """The risk engine's protective close (and the panel's kill switch) is created in one
    statement on PostgreSQL: the same command row, timeline and doorbell as the ORM's transaction."""
    from django.db import connection

    from commands.services import command_create

    def create(command_id: str) -> Command:
        return command_create(
            tenant=account_1.tenant,
            account=account_1,
            common={
                "command_id": command_id,
                "command_type": "close_position",
                "priority": "critical" if lane == "fast" else "normal",
                "fast_lane": lane == "fast",
                "reason": "single_trade_loss:ticket",
                "expires_at_utc": None,
            },
            specific={"ticket": 123},
            envelope={"raised_by": "risk_engine"},
            correlation_id="risk-x",
            idempotency_key=command_id,
            source="bridge" if lane == "fast" else "api",  # the bridge's own commands are always fast
        )

    def rows(command: Command, doorbells: list) -> dict:
        stored = Command.objects.get(pk=command.pk)
        row = {
            k: v
            for k, v in model_to_dict(stored).items()
            if k not in {"id", "command_id", "idempotency_key", "received_at", "queued_at", "updated_at"}
        }
        events = list(stored.events.values("kind", "from_state", "to_state", "note", "attempt"))
        times = {stored.received_at, stored.queued_at, stored.updated_at, *stored.events.values_list("at", flat=True)}
        tasks = [(key, {k: v for k, v in task.items() if k not in {"id", "started"}}) for key, task in doorbells]
        return {"command": row, "events": events, "one_time": len(times), "tasks": tasks}

    by_statement = create("bridge-pa-one-statement")
    rung_by_statement = _doorbells()
    monkeypatch.setattr(connection, "vendor", "sqlite")  # the embedded default's path: ORM writes in a transaction
    by_transaction = create("bridge-pa-one-transaction")
    monkeypatch.undo()
    rung_by_transaction = _doorbells()[len(rung_by_statement) :]
    assert by_statement.pk != by_transaction.pk and not by_statement._state.adding
    statement, orm = rows(by_statement, rung_by_statement), rows(by_transaction, rung_by_transaction)
    assert statement == orm
    assert statement["one_time"] == 1 and statement["command"]["lane"] == lane
    assert [e["to_state"] for e in statement["events"]] == ["received", "queued"]
    assert len(statement["tasks"]) == 1


def test_a_bridge_command_id_used_twice_is_refused_on_the_single_statement_path(account_1):
    from bridgeproject.errors import BridgeError
    from commands.services import command_create

    common = {
        "command_id": "bridge-pa-twice",
        "command_type": "close_position",
        "priority": "critical",
        "fast_lane": True,
        "reason": "",
        "expires_at_utc": None,
    }

    def create() -> Command:
        return command_create(
            tenant=account_1.tenant,
            account=account_1,
            common=common,
            specific={"ticket": 1},
            envelope={},
            correlation_id="risk-y",
            idempotency_key="bridge-pa-twice",
            source="bridge",
        )

    create()
    with pytest.raises(BridgeError) as refused, transaction.atomic():
        create()
    assert refused.value.code == "duplicate_command_id"
    assert Command.objects.filter(command_id="bridge-pa-twice").count() == 1
