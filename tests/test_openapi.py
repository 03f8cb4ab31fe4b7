"""The OpenAPI document a Laravel team integrates from (PROTOCOL §9 "OpenAPI"): JSON by default,
3.1, valid; `command_type` a discriminator over the command types; every example, every live
answer and every callback valid against the schema it is documented with; every error code and
response header listed."""

from __future__ import annotations

import ast
import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

from bridgeproject.errors import PROBLEM_CODES
from callbacks.models import CallbackDelivery
from commands import examples
from commands.error_codes import COMMAND_ERROR_CODES, MT5_RETCODE_PREFIX
from commands.models import CommandType
from tests.test_execution import _terminal, run, submit, trader  # noqa: F401  # fixtures

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def document(client) -> dict[str, Any]:
    response = client.get("/api/v1/schema")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/vnd.oai.openapi+json")
    return json.loads(response.content)


def schema_validator(document: dict[str, Any], name: str) -> Draft202012Validator:
    """A JSON Schema 2020-12 validator for components/schemas/<name>, its $refs resolved in the document."""
    root = {"components": document["components"], "$ref": f"#/components/schemas/{name}"}
    return Draft202012Validator(root)


def assert_valid(document: dict[str, Any], name: str, instance: Any) -> None:
    errors = sorted(schema_validator(document, name).iter_errors(instance), key=str)
    assert not errors, "\n".join(f"{list(error.absolute_path)}: {error.message}" for error in errors[:5])


def request_schema_name(document: dict[str, Any], path: str) -> str:
    content = document["paths"][path]["post"]["requestBody"]["content"]["application/json"]
    return content["schema"]["$ref"].rsplit("/", 1)[1]


# --- the document itself -------------------------------------------------------------------------


def test_a_generator_pointed_at_the_schema_url_gets_valid_openapi_3_1_json(document):
    assert document["openapi"] == "3.1.0"
    validate(document)


def test_yaml_is_there_on_request_and_has_no_null_keys(client):
    response = client.get("/api/v1/schema?format=yaml")
    assert response.status_code == 200
    loaded = yaml.safe_load(response.content)

    def keys(value: Any) -> list[Any]:
        if isinstance(value, dict):
            return [*value.keys(), *[key for child in value.values() for key in keys(child)]]
        if isinstance(value, list):
            return [key for child in value for key in keys(child)]
        return []

    assert all(isinstance(key, str) for key in keys(loaded))
    assert loaded["openapi"] == "3.1.0"


def test_command_type_is_a_discriminator_whose_values_are_the_command_types(document):
    payload = document["components"]["schemas"]["CommandPayloadRequest"]
    mapping = payload["discriminator"]["mapping"]
    assert payload["discriminator"]["propertyName"] == "command_type"
    assert set(mapping) == set(CommandType.values)
    validator_for = {ctype: schema_validator(document, ref.rsplit("/", 1)[1]) for ctype, ref in mapping.items()}
    for ctype, validator in validator_for.items():
        # exactly one schema takes a payload of each type: oneOf holds without the discriminator
        body = {"command_id": "x-1", "command_type": ctype}
        assert [other for other, v in validator_for.items() if v.is_valid(body)] in ([ctype], [])
        assert not validator.is_valid(
            {**body, "command_type": "close_positions" if ctype != "close_positions" else "x"}
        )


def test_every_example_in_the_document_is_valid_against_its_schema(document):
    checked = 0
    for item in document["paths"].values():
        for operation in item.values():
            content = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
            for example in content.get("examples", {}).values():
                assert_valid(document, content["schema"]["$ref"].rsplit("/", 1)[1], example["value"])
                checked += 1
    assert checked >= 2


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/v1/mt5/commands", examples.CLOSE_POSITIONS),
        ("/api/v1/mt5/commands", examples.LEGACY_OPEN_POSITION),
        ("/api/v1/ingest", examples.CLOSE_POSITIONS),
        ("/api/v1/ingest", examples.POLICY_SNAPSHOT),
        ("/api/v1/mt5/policies", examples.POLICY_SNAPSHOT),
    ],
)
def test_the_seeds_envelopes_are_valid_against_the_documented_request_bodies(document, path, body):
    assert_valid(document, request_schema_name(document, path), body)


def test_a_close_positions_envelope_with_a_wrong_command_type_is_invalid_against_the_document(document):
    body = copy.deepcopy(examples.CLOSE_POSITIONS)
    body["payload"]["command_type"] = "ClosePositionsPayloadRequest"
    assert not schema_validator(document, request_schema_name(document, "/api/v1/mt5/commands")).is_valid(body)


# --- error codes and headers -------------------------------------------------------------------


def _string_args(call: ast.Call) -> list[str]:
    return [arg.value for arg in call.args if isinstance(arg, ast.Constant) and isinstance(arg.value, str)]


def _sources(*apps: str) -> list[ast.AST]:
    files = [file for app in apps for file in (ROOT / app).rglob("*.py") if "migrations" not in file.parts]
    return [ast.parse(file.read_text()) for file in files]


def test_every_problem_code_the_code_raises_is_listed_and_documented(document):
    raised = set()
    for tree in _sources("bridgeproject", "tenancy", "policies", "callbacks", "commands", "execution", "risk"):
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "BridgeError":
                raised.update(_string_args(node)[:1])
    assert raised, "the scan found no BridgeError"
    assert raised <= set(PROBLEM_CODES), raised - set(PROBLEM_CODES)
    description = document["components"]["schemas"]["Problem"]["properties"]["code"]["description"]
    for code in PROBLEM_CODES:
        assert f"`{code}`" in description


def test_every_command_error_code_the_executors_set_is_listed_and_documented(document):
    set_codes = set()
    for tree in _sources("execution", "risk"):
        for node in ast.walk(tree):
            if isinstance(node, ast.keyword) and node.arg == "error_code" and isinstance(node.value, ast.Constant):
                set_codes.add(node.value.value)
    set_codes.add("trading_disabled")  # risk.engine.open_position_guard's reason, returned as a tuple
    assert {"unknown_symbol", "position_not_found", "slippage_exceeded"} <= set_codes
    assert set_codes <= set(COMMAND_ERROR_CODES), set_codes - set(COMMAND_ERROR_CODES)
    for schema in ("Command", "CommandResultPayload"):
        description = document["components"]["schemas"][schema]["properties"]["error_code"]["description"]
        for code in [*COMMAND_ERROR_CODES, MT5_RETCODE_PREFIX]:
            assert f"`{code}" in description, (schema, code)


def test_statuses_and_response_headers_are_documented(document):
    post = document["paths"]["/api/v1/mt5/commands"]["post"]["responses"]
    assert {"202", "400", "401", "403", "404", "409", "413", "415", "422", "429", "500", "503"} <= set(post)
    assert "request_in_progress" in post["409"]["description"]
    assert "Idempotent-Replayed" in post["202"]["headers"]
    assert "Retry-After" in post["429"]["headers"] and "Retry-After" in post["503"]["headers"]
    assert "WWW-Authenticate" in post["401"]["headers"]
    for path, item in document["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                assert "X-Correlation-ID" in response.get("headers", {}), (path, method, status)
    account = document["paths"]["/api/v1/mt5/accounts/{account_login}"]["get"]
    assert "409" in account["responses"]  # ambiguous_account
    assert "server" in [parameter["name"] for parameter in account["parameters"]]


def test_both_callbacks_are_webhooks_with_their_signature_headers(document):
    webhooks = document["webhooks"]
    assert set(webhooks) == {"protective_action_report", "command_result"}
    for webhook in webhooks.values():
        headers = {parameter["name"] for parameter in webhook["post"]["parameters"]}
        assert {"webhook-id", "webhook-timestamp", "webhook-signature", "X-Idempotency-Key"} <= headers
        assert "Standard Webhooks" in webhook["post"]["description"]


# --- live answers and callbacks against the document ------------------------------------------


def test_alices_sync_read_is_exactly_what_the_document_says(document, trader):  # noqa: F811
    response = trader.get("mt5/accounts/50040367")
    assert response.status_code == 200
    body = response.json()
    assert_valid(document, "AccountRead", body)
    documented = document["components"]["schemas"]["AccountRead"]["properties"]
    assert set(body) == set(documented) >= {"risk", "policy_version", "trading_enabled", "snapshot"}


def test_a_command_result_callback_is_valid_against_its_webhook_schema(document, trader):  # noqa: F811
    command = run(submit(trader, "open_position", symbol="EURUSD", direction="buy", volume=0.1))
    envelope = CallbackDelivery.objects.get(source_id=str(command.pk)).envelope
    assert_valid(document, "CommandResult", envelope)
    rejected = run(submit(trader, "close_position", ticket=999999))
    envelope = CallbackDelivery.objects.get(source_id=str(rejected.pk)).envelope
    assert_valid(document, "CommandResult", envelope)
    assert envelope["payload"]["error_code"] == "position_not_found"


def test_alices_command_reads_are_valid_against_the_document(document, trader):  # noqa: F811
    run(submit(trader, "open_position", "doc-1", symbol="EURUSD", direction="buy", volume=0.1))
    assert_valid(document, "CommandDetail", trader.get("mt5/commands/doc-1").json())
    assert_valid(document, "CommandPage", trader.get("mt5/commands").json())
