"""Strict input (PROTOCOL §1, §9): what once answered 500 or was silently accepted is a clear 4xx
problem that changes nothing; what is accepted can always be read back."""

from __future__ import annotations

import base64
import copy
import json
from urllib.parse import urlencode

import pytest
from django.utils import timezone

from commands import examples
from commands.models import Command, IdempotencyRecord
from tests.conftest import fresh
from tests.test_intake import problem

pytestmark = pytest.mark.django_db


def nothing_stored() -> bool:
    return not Command.objects.exists() and not IdempotencyRecord.objects.exists()


# --- the command list's query ------------------------------------------------------------------


@pytest.mark.parametrize(
    "since",
    ["0000-01-01T00:00:00Z", "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-05:00", "2026-13-01T00:00:00Z"],
)
def test_alice_asking_for_commands_since_a_date_no_calendar_has_gets_a_422_naming_since(alice, account_1, since):
    body = problem(alice.get("mt5/commands", since=since), 422, "validation_failed")
    assert [error["field"] for error in body["errors"]] == ["since"]


def test_alice_asking_for_commands_since_a_time_without_a_zone_gets_a_422(alice, account_1):
    body = problem(alice.get("mt5/commands", since="2026-05-29T12:00:00"), 422, "validation_failed")
    assert body["errors"][0]["field"] == "since"


@pytest.mark.parametrize(
    "position",
    ["not-a-date", "0000-01-01 00:00:00+00:00", "2026-05-29T12:00:00", "null"],
)
def test_alice_sending_a_forged_cursor_gets_a_400_invalid_cursor_not_a_500(alice, account_1, position):
    alice.post("mt5/commands", examples.CLOSE_POSITIONS)
    forged = base64.b64encode(urlencode({"p": position, "o": "0", "r": "0"}).encode()).decode()
    problem(alice.get("mt5/commands", cursor=forged), 400, "invalid_cursor")
    problem(alice.get("mt5/commands", cursor="%%%not-base64"), 400, "invalid_cursor")


def test_alice_following_the_lists_own_next_link_reads_the_next_page(alice, account_1):
    for n in range(3):
        body = fresh("close_positions")
        body["payload"]["command_id"] = f"cmd-page-{n}"
        assert alice.post("mt5/commands", body).status_code == 202
    first = alice.get("mt5/commands", page_size=2).json()
    assert [row["command_id"] for row in first["results"]] == ["cmd-page-2", "cmd-page-1"]
    second = alice.client.get(first["next"], headers=alice.headers()).json()
    assert [row["command_id"] for row in second["results"]] == ["cmd-page-0"]


# --- timestamps in bodies ----------------------------------------------------------------------


@pytest.mark.parametrize("field", ["meta.sent_at_utc", "payload.expires_at_utc"])
def test_a_timestamp_without_a_time_zone_is_a_422_naming_the_field_and_stores_nothing(alice, account_1, field):
    body = fresh("close_positions")
    part, name = field.split(".")
    body[part][name] = "2099-05-29T12:00:00"
    response = problem(alice.post("mt5/commands", body), 422, "validation_failed")
    assert [error["field"] for error in response["errors"]] == [field]
    assert "time zone" in response["errors"][0]["message"]
    assert nothing_stored()


def test_the_flat_bodys_issued_at_without_a_time_zone_is_a_422(alice, account_1):
    body = copy.deepcopy(examples.LEGACY_OPEN_POSITION)
    body["issued_at"] = "2026-05-29 12:00:00"
    response = problem(alice.post("mt5/commands", body), 422, "validation_failed")
    assert [error["field"] for error in response["errors"]] == ["issued_at"]


def test_a_timestamp_with_an_offset_is_still_accepted_and_stored_in_utc(alice, account_1):
    body = fresh("close_positions")
    body["payload"]["expires_at_utc"] = "2099-05-29T14:00:00+02:00"
    assert alice.post("mt5/commands", body).status_code == 202
    assert Command.objects.get().expires_at.isoformat() == "2099-05-29T12:00:00+00:00"


# --- duplicate JSON keys -----------------------------------------------------------------------


def test_a_body_with_a_key_twice_in_one_object_is_a_400_naming_the_key_and_stores_nothing(alice, account_1):
    text = json.dumps(examples.CLOSE_POSITIONS)
    # Which of two command types would run? JSON leaves it to the parser: the bridge refuses.
    doubled = text.replace(
        '"command_type": "close_positions"', '"command_type": "close_positions", "command_type": "open_position"'
    )
    assert doubled != text
    body = problem(alice.post("mt5/commands", doubled), 400, "duplicate_json_key")
    assert "command_type" in body["detail"]
    assert nothing_stored()


def test_the_same_key_in_two_different_objects_is_fine(alice, account_1):
    body = fresh("close_positions")
    assert "correlation_id" in body["meta"]
    body["payload"]["correlation_id"] = "not a duplicate: another object"
    assert alice.post("mt5/commands", body).status_code == 202


# --- command ids -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command_id", ["cmd/1", "cmd 1", "cmd?x=1", "cmd#1", "cmd%2F1", "é-cmd", "..", ".", "x" * 65, "", "cmd-1\n"]
)
def test_a_command_id_that_could_not_be_read_back_by_its_url_is_refused_at_intake(alice, account_1, command_id):
    body = fresh("close_positions")
    body["payload"]["command_id"] = command_id
    response = problem(alice.post("mt5/commands", body), 422, "validation_failed")
    assert [error["field"] for error in response["errors"]] == ["payload.command_id"]
    assert nothing_stored()


def test_a_flat_command_id_with_a_slash_is_refused_too(alice, account_1):
    body = copy.deepcopy(examples.LEGACY_OPEN_POSITION)
    body["command_id"] = "test/open-1"
    response = problem(alice.post("mt5/commands", body), 422, "validation_failed")
    assert [error["field"] for error in response["errors"]] == ["command_id"]


@pytest.mark.parametrize("command_id", ["a", "cmd-10001", "Order_2026.05.29:17", "x" * 64])
def test_every_accepted_command_id_reads_back_by_its_url(alice, account_1, command_id):
    body = fresh("close_positions")
    body["payload"]["command_id"] = command_id
    assert alice.post("mt5/commands", body).status_code == 202
    response = alice.get(f"mt5/commands/{command_id}")
    assert response.status_code == 200, response.content
    assert response.json()["command_id"] == command_id


# --- hostile policy numbers (issue #19: they answered 500) ---------------------------------------
@pytest.mark.parametrize(
    ("field", "value"), [("initial_balance_snapshot", 0), ("high_water_mark", 1e12), ("initial_balance_snapshot", -5)]
)
def test_a_policy_with_an_impossible_balance_is_a_422_naming_the_field_and_changes_nothing(
    alice, account_1, field, value
):
    from policies.models import PolicySnapshot

    before = PolicySnapshot.objects.count()
    body = fresh("policy_snapshot")
    body["payload"][field] = value
    body["payload"]["policy_version"] = 13
    body["payload"]["daily_starting_balance_date"] = timezone.now().date().isoformat()
    answer = problem(alice.post("mt5/policies", body), 422, "validation_failed")
    assert [error["field"] for error in answer["errors"]] == [f"payload.{field}"]
    assert PolicySnapshot.objects.count() == before
