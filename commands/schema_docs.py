"""OpenAPI descriptions: the request bodies (the request models that validate them), the problems,
and the callbacks."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiExample, OpenApiResponse, PolymorphicProxySerializer, inline_serializer
from rest_framework import serializers

from bridgeproject.errors import PROBLEM_CODES
from commands import examples, schema
from commands.error_codes import describe_command_error_codes
from commands.models import CommandType
from commands.serializers import ProblemSerializer

# The request bodies are the request models themselves (commands.schema): the document is generated
# from the models that validate them (openapi.RequestModelExtension), never from a copy.
PolicyEnvelopeDoc = schema.PolicyEnvelopeDoc

# drf-spectacular takes a request model wherever it takes a serializer (RequestModelExtension);
# its type stubs only know serializers.
InboundEnvelopeDoc = PolymorphicProxySerializer(
    component_name="InboundEnvelope",
    serializers=[schema.CommandEnvelopeDoc, schema.PolicyEnvelopeDoc],  # type: ignore[list-item]
    resource_type_field_name=None,
)

CommandBodyDoc = PolymorphicProxySerializer(
    component_name="CommandBody",
    serializers=[schema.CommandEnvelopeDoc, schema.LegacyFlatCommand],  # type: ignore[list-item]
    resource_type_field_name=None,
)


def _codes(status: int) -> str:
    return "; ".join(f"`{code}`: {meaning}" for code, meaning in _meanings(status))


def _meanings(status: int) -> list[tuple[str, str]]:
    return [(code, meaning) for code, (code_status, meaning) in PROBLEM_CODES.items() if code_status == status]


_PROBLEMS = {status: _codes(status) for status in sorted({status for status, _ in PROBLEM_CODES.values()})}


def problems(*statuses: int) -> dict[int, OpenApiResponse]:
    return {status: OpenApiResponse(ProblemSerializer, description=_PROBLEMS[status]) for status in statuses}


POST_PROBLEMS = problems(400, 401, 403, 404, 409, 413, 415, 422, 429, 500, 503)
GET_PROBLEMS = problems(400, 401, 403, 404, 409, 422, 429, 500, 503)

# The request examples: one envelope per command type (close_positions is the panel's own), the
# policy snapshot and the PowerShell quick test's flat body. Generated clients' tests send them all.
COMMAND_EXAMPLES = [
    OpenApiExample(
        ctype,
        summary=f"{ctype} (the panel's example)" if ctype == "close_positions" else ctype,
        request_only=True,
        value=envelope,
    )
    for ctype, envelope in examples.COMMAND_ENVELOPES.items()
]
POLICY_SNAPSHOT_EXAMPLE = OpenApiExample(
    "policy_snapshot",
    summary="policy_snapshot (the panel's example)",
    request_only=True,
    value=examples.POLICY_SNAPSHOT,
)
LEGACY_FLAT_EXAMPLE = OpenApiExample(
    "legacy_open_position",
    summary="A legacy flat open_position (the PowerShell quick test's body)",
    request_only=True,
    value=examples.LEGACY_OPEN_POSITION,
)


def cursor_page(name: str, item: serializers.Serializer) -> serializers.Serializer:
    """The shape of a cursor-paginated list: {next, previous, results}."""
    return inline_serializer(
        name,
        {
            "next": serializers.URLField(allow_null=True),
            "previous": serializers.URLField(allow_null=True),
            "results": item,
        },
    )


# --- The callbacks (PROTOCOL §7, §9), documented under `webhooks` ---------------------------------


class CallbackMeta(serializers.Serializer):
    protocol_version = serializers.CharField()
    request_id = serializers.UUIDField(help_text="Also the `webhook-id` header; the same on every retry.")
    correlation_id = serializers.CharField()
    idempotency_key = serializers.CharField(
        help_text="Also X-Idempotency-Key; globally unique, the same on every retry: de-duplicate on it."
    )
    tenant_id = serializers.CharField()
    environment = serializers.CharField()
    source = serializers.ChoiceField(choices=["python"])  # type: ignore[assignment]  # a declared field, not Field.source
    sent_at_utc = serializers.DateTimeField()


class CallbackActor(serializers.Serializer):
    trading_account_id = serializers.CharField()
    account_login = serializers.IntegerField()
    server = serializers.CharField()
    platform = serializers.ChoiceField(choices=["MT5"])


class CallbackContext(serializers.Serializer):
    session_id = serializers.CharField()
    correlation_group = serializers.CharField()


def _callback_request(request_type: str) -> type[serializers.Serializer]:
    name = "".join(part.title() for part in request_type.split("_")) + "Request"
    return type(
        name,
        (serializers.Serializer,),
        {
            "type": serializers.ChoiceField(choices=[request_type]),
            "version": serializers.ChoiceField(choices=["1"]),
        },
    )


# Numbers in callbacks are JSON numbers (PROTOCOL §9 "Numbers"): money rounded to the account's
# currency digits, prices to the symbol's digits, volumes to its volume step.
def _number(**kwargs: object) -> serializers.FloatField:
    return serializers.FloatField(**kwargs)  # type: ignore[arg-type]


class ClosedPosition(serializers.Serializer):
    """One position of an account-wide protective close."""

    ticket = serializers.IntegerField()
    symbol = serializers.CharField(allow_null=True, required=False)
    status = serializers.CharField(help_text="closed, failed, ...")
    volume = _number(allow_null=True, required=False)
    price = _number(allow_null=True, required=False)
    profit = _number(allow_null=True, required=False)
    retcode = serializers.IntegerField(allow_null=True, required=False)
    error = serializers.CharField(allow_null=True, required=False)


class ProtectiveActionPayload(serializers.Serializer):
    """The panel's protective_action_report payload, plus the action's identity and progress."""

    action_id = serializers.UUIDField()
    report_sequence = serializers.IntegerField(help_text="1, 2, ...: the last report states the final outcome.")
    rule_key = serializers.CharField()
    policy_version = serializers.IntegerField()
    goal = serializers.CharField()
    goal_met = serializers.BooleanField()
    attempts = serializers.IntegerField()
    position_id = serializers.CharField(allow_null=True)
    ticket = serializers.IntegerField(allow_null=True)
    symbol = serializers.CharField(allow_null=True)
    volume = _number(allow_null=True)
    floating_pnl = _number(allow_null=True)
    closed_pnl = _number()
    equity = _number()
    balance = _number()
    threshold_used = _number()
    detection_timestamp = serializers.DateTimeField()
    execution_timestamp = serializers.DateTimeField(allow_null=True)
    execution_status = serializers.ChoiceField(choices=["success", "failed", "partial", "skipped"])
    mt5_response = serializers.JSONField(allow_null=True)
    error_message = serializers.CharField(allow_null=True)
    violation_count = serializers.IntegerField(allow_null=True, help_text="Single-trade rules only.")
    positions = ClosedPosition(many=True, required=False, help_text="Account-wide actions only.")


class Mt5Result(serializers.Serializer):
    retcode = serializers.IntegerField(allow_null=True)
    order = serializers.IntegerField(allow_null=True)
    deal = serializers.IntegerField(allow_null=True)
    price = _number(allow_null=True)


class CommandResultPayload(serializers.Serializer):
    command_id = serializers.CharField()
    command_type = serializers.ChoiceField(choices=CommandType.choices)
    state = serializers.CharField()
    attempts = serializers.IntegerField()
    mt5 = Mt5Result()
    result = serializers.JSONField(help_text="The normalised MT5 result; its volumes, prices and money are numbers.")
    error_code = serializers.CharField(
        allow_null=True, help_text="Null on success; else one of:\n" + describe_command_error_codes()
    )
    error_message = serializers.CharField(allow_null=True)
    finished_at_utc = serializers.DateTimeField(allow_null=True)


def _callback_doc(name: str, request_type: str, payload: serializers.Serializer) -> type[serializers.Serializer]:
    return type(
        name,
        (serializers.Serializer,),
        {
            "__doc__": f"The `{request_type}` callback envelope (PROTOCOL §4, §7).",
            "meta": CallbackMeta(),
            "actor": CallbackActor(),
            "context": CallbackContext(),
            "request": _callback_request(request_type)(),
            "payload": payload,
        },
    )


ProtectiveActionReportDoc = _callback_doc(
    "ProtectiveActionReport", "protective_action_report", ProtectiveActionPayload()
)
CommandResultDoc = _callback_doc("CommandResult", "command_result", CommandResultPayload())
