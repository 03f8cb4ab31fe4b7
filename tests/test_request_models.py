"""One schema per message (ARCHITECTURE "Layering"): the request models validate every body, word
every field error, are what the OpenAPI document shows, and are what the risk rules read a
stored snapshot with. No database: these are the models' own behaviour."""

from __future__ import annotations

import copy
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any

import pytest

from bridgeproject.errors import BridgeError
from bridgeproject.jsonutil import jsonable
from commands import examples
from commands.models import CommandType
from commands.schema import COMMON_FIELDS, PAYLOAD_MODELS
from commands.validation import validate_command_payload, validate_envelope, validate_flat, validate_policy_payload
from panel.payloads import SAMPLE_COMMAND_FIELDS
from policies.schema import PolicyPayload
from risk.rules import Policy, PolicyError


def refused(validate: Any, body: Any) -> list[dict[str, str]]:
    with pytest.raises(BridgeError) as error:
        validate(body)
    assert error.value.status == 422 and error.value.code == "validation_failed"
    return error.value.errors


def command(command_type: str, **fields: Any) -> dict[str, Any]:
    return {"command_id": "c-1", "command_type": command_type, **fields}


# --- every command type -----------------------------------------------------------------------


def test_every_command_type_has_a_model_and_a_sample_the_intake_accepts() -> None:
    assert set(PAYLOAD_MODELS) == set(CommandType.values)
    for command_type in CommandType.values:
        common, specific = validate_command_payload(
            command(command_type, **SAMPLE_COMMAND_FIELDS.get(command_type, {}))
        )
        assert common["command_type"] == command_type and set(common) == COMMON_FIELDS
        assert set(specific) <= set(PAYLOAD_MODELS[command_type].model_fields) - COMMON_FIELDS


def test_laravels_close_positions_comes_back_typed_with_the_defaults_filled_in() -> None:
    envelope = validate_envelope(examples.CLOSE_POSITIONS)
    common, specific = validate_command_payload(envelope["payload"])

    assert envelope["meta"]["sent_at_utc"] == datetime(2026, 5, 29, 12, 0, tzinfo=UTC)
    assert common == {
        "command_id": "cmd-10001",
        "command_type": "close_positions",
        "priority": "critical",
        "fast_lane": True,
        "reason": "daily_drawdown_breach",
        "expires_at_utc": None,
    }
    assert specific == {
        "target": {"mode": "all_positions"},
        "execution": {"allow_partial_close": False, "close_only_profitable": False, "force_market": True},
    }


def test_a_field_left_out_stays_out_and_a_null_stays_null() -> None:
    _, left_out = validate_command_payload(command("open_position", symbol="EURUSD", direction="buy", volume=0.1))
    _, nulled = validate_command_payload(
        command("open_position", symbol="EURUSD", direction="buy", volume=0.1, stop_loss=None)
    )

    assert left_out == {"symbol": "EURUSD", "direction": "buy", "volume": Decimal("0.1")}
    assert nulled == {**left_out, "stop_loss": None}


@pytest.mark.parametrize(
    ("command_type", "fields", "expected"),
    [
        ("open_position", {"symbol": "EURUSD", "direction": "up", "volume": 0.001}, ["direction", "volume"]),
        ("open_position", {"symbol": "", "direction": "buy", "volume": "0.1"}, ["symbol", "volume"]),
        ("close_position", {"ticket": True}, ["ticket"]),
        (
            "close_positions",
            {"target": {"mode": "by_tickets", "tickets": [1, "2", 0]}},
            ["target.tickets[1]", "target.tickets[2]"],
        ),
        ("close_positions", {"target": "all"}, ["target"]),
        ("modify_position", {"ticket": 5}, ["stop_loss"]),
        ("modify_position", {"ticket": 5, "stop_loss": -1}, ["stop_loss"]),
        ("cancel_orders", {"tickets": "1,2"}, ["tickets"]),
        ("disable_trading", {"priority": "urgent", "fast_lane": "yes"}, ["priority", "fast_lane"]),
        ("enable_trading", {"expires_at_utc": "2026-06-01T12:00:00"}, ["expires_at_utc"]),
        ("sync_account", {"reason": "tab\there"}, ["reason"]),
    ],
)
def test_each_command_types_bad_fields_are_each_named_under_payload(
    command_type: str, fields: dict[str, Any], expected: list[str]
) -> None:
    errors = refused(validate_command_payload, command(command_type, **fields))
    assert [error["field"] for error in errors] == [f"payload.{name}" for name in expected]


def test_an_unknown_command_type_is_reported_with_the_other_common_fields() -> None:
    errors = refused(validate_command_payload, {"command_id": "..", "command_type": "teleport"})
    assert errors == [
        {
            "field": "payload.command_id",
            "message": "1–64 characters of A–Z, a–z, 0–9, '.', '_', ':' and '-' (not dots alone).",
        },
        {"field": "payload.command_type", "message": '"teleport" is not a valid choice.'},
    ]


# --- every kind of field error, worded once ------------------------------------------------------


def test_every_kind_of_envelope_error_has_its_own_sentence() -> None:
    body = copy.deepcopy(examples.CLOSE_POSITIONS)
    body["meta"].update(protocol_version="2.0", request_id="not-a-uuid", sent_at_utc="2026-05-29T12:00:00")
    body["meta"].pop("tenant_id")
    body["actor"].update(account_login="50040367", server=None, platform="MT4")
    body["context"] = {"session_id": "x" * 129, "correlation_group": ""}
    body["request"] = {"type": "command", "version": 1}

    errors = {error["field"]: error["message"] for error in refused(validate_envelope, body)}

    assert errors == {
        "meta.request_id": "Must be a valid UUID.",
        "meta.tenant_id": "This field is required.",
        "meta.sent_at_utc": "Must have a time zone: Z or an offset such as +02:00.",
        "meta.protocol_version": "Must be 1.x.",
        "actor.account_login": "A valid integer is required.",
        "actor.server": "This field may not be null.",
        "actor.platform": '"MT4" is not a valid choice.',
        "context.session_id": "Ensure this field has no more than 128 characters.",
        "context.correlation_group": "This field may not be blank.",
    }


def test_a_version_sent_as_a_number_and_a_login_sent_as_text_are_read_as_the_serializers_read_them() -> None:
    body = copy.deepcopy(examples.CLOSE_POSITIONS)
    body["request"]["version"] = 1
    body["actor"]["trading_account_id"] = 1001

    envelope = validate_envelope(body)

    assert envelope["request"]["version"] == "1" and envelope["actor"]["trading_account_id"] == "1001"


def test_the_flat_body_names_its_own_fields_without_a_prefix() -> None:
    body = {**examples.LEGACY_OPEN_POSITION, "account_id": 0, "issued_at": "yesterday"}
    assert [error["field"] for error in refused(validate_flat, body)] == ["account_id", "issued_at"]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("5", "Must be a number."),
        (True, "Must be a number."),
        (1e400, "Must be a finite number."),
        (0, "Must be more than 0."),
        (100.5, "Must be at most 100."),
        (None, None),
    ],
)
def test_a_percent_is_a_json_number_above_0_and_at_most_100_or_null(value: Any, message: str | None) -> None:
    payload = {**examples.POLICY_SNAPSHOT["payload"], "max_daily_dd_pct": value}
    if message is None:
        assert validate_policy_payload(payload)["max_daily_dd_pct"] is None
    else:
        assert refused(validate_policy_payload, payload) == [{"field": "payload.max_daily_dd_pct", "message": message}]


def test_money_has_at_most_two_decimals() -> None:
    payload = {**examples.POLICY_SNAPSHOT["payload"], "daily_starting_balance": 98500.005}
    assert refused(validate_policy_payload, payload) == [
        {"field": "payload.daily_starting_balance", "message": "At most 2 decimal places."}
    ]


# --- policy snapshots, Rules v2 included ------------------------------------------------------------


V2_FIELDS: dict[str, Any] = {
    "daily_reset_timezone": "Europe/Prague",
    "daily_reset_time": "00:00",
    "daily_reference_fallback": "max_balance_equity",
    "trailing_source": "eod_balance",
    "trailing_lock_offset": 500,
    "breach_at_floor": True,
    "reinstate": False,
    "max_open_positions": 5,
    "max_position_volume": 2.5,
    "max_total_volume": 10,
    "require_stop_loss": True,
    "stop_loss_grace_seconds": 60,
    "close_before_weekend": "21:30",
    "profit_target_pct": 10,
}


def test_olgas_v2_snapshot_is_validated_and_read_by_the_rules_with_the_same_model() -> None:
    payload = copy.deepcopy(examples.POLICY_SNAPSHOT["payload"])
    payload.update(V2_FIELDS, daily_starting_balance_date="2020-01-02")
    payload["enforcement_flags"].update(close_excess_positions=False, close_all_before_weekend=True)

    validated = validate_policy_payload(payload)
    stored = jsonable(validated)
    policy = Policy.from_payload(stored)

    assert validated["daily_reset_time"] == time(0, 0) and validated["close_before_weekend"] == time(21, 30)
    assert validated["daily_starting_balance_date"] == date(2020, 1, 2)
    assert set(validated) == set(payload)  # nothing added: the stored payload is what Laravel sent
    assert policy.max_position_volume == Decimal("2.5") and policy.trailing_source == "eod_balance"
    assert policy.close_excess_positions is False and policy.close_oversized_positions is True


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"daily_reset_timezone": "Europe/Atlantis"}, "daily_reset_timezone"),
        ({"daily_reset_time": "25:00"}, "daily_reset_time"),
        ({"trailing_source": "margin"}, "trailing_source"),
        ({"max_open_positions": -1}, "max_open_positions"),
        ({"max_position_volume": 0}, "max_position_volume"),
        ({"stop_loss_grace_seconds": 86_401}, "stop_loss_grace_seconds"),
        ({"close_before_weekend": 2130}, "close_before_weekend"),
        ({"profit_target_pct": 0}, "profit_target_pct"),
        ({"breach_at_floor": "false"}, "breach_at_floor"),
        ({"initial_balance_snapshot": 0}, "initial_balance_snapshot"),
        ({"high_water_mark": 1e12}, "high_water_mark"),
    ],
)
def test_each_v2_field_out_of_range_is_named(changes: dict[str, Any], field: str) -> None:
    payload = {**examples.POLICY_SNAPSHOT["payload"], **changes}
    assert [error["field"] for error in refused(validate_policy_payload, payload)] == [f"payload.{field}"]


def test_a_starting_balance_date_after_the_trading_day_is_the_rules_objection_under_payload() -> None:
    payload = {**examples.POLICY_SNAPSHOT["payload"], "daily_starting_balance_date": "2999-01-01"}
    assert [error["field"] for error in refused(validate_policy_payload, payload)] == [
        "payload.daily_starting_balance_date"
    ]


def test_a_stored_zero_percent_is_read_but_a_sent_one_is_refused() -> None:
    payload = {**examples.POLICY_SNAPSHOT["payload"], "max_single_trade_loss_pct": 0}

    assert Policy.from_payload(jsonable(payload)).max_single_trade_loss_pct == Decimal(0)
    assert refused(validate_policy_payload, payload)[0]["field"] == "payload.max_single_trade_loss_pct"


def test_the_rules_refuse_a_payload_the_schema_refuses_naming_the_field() -> None:
    with pytest.raises(PolicyError, match=r"enforcement_flags\.close_all_on_daily_dd: This field is required"):
        Policy.from_payload({**examples.POLICY_SNAPSHOT["payload"], "enforcement_flags": {}})


# --- the document is the models ------------------------------------------------------------------


@pytest.mark.django_db
def test_the_documented_policy_payload_is_the_models_own_json_schema(client: Any) -> None:
    document = client.get("/api/v1/schema").json()
    documented = document["components"]["schemas"]["PolicyPayloadRequest"]
    model = PolicyPayload.model_json_schema(mode="validation")

    assert list(documented["properties"]) == list(model["properties"])
    assert documented["required"] == model["required"]
    assert documented["properties"]["max_daily_dd_pct"]["anyOf"][0] == {
        "type": "number",
        "exclusiveMinimum": 0,
        "maximum": 100,
    }
