"""OpenAPI descriptions of the request bodies, built from the same serializers that validate them."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiExample, OpenApiResponse, PolymorphicProxySerializer, inline_serializer
from rest_framework import serializers

from commands import envelope as env
from commands import examples
from commands.serializers import ProblemSerializer


def _command_payload_doc(command_type: str, specific: type[serializers.Serializer]) -> type[serializers.Serializer]:
    name = "".join(part.title() for part in command_type.split("_")) + "Payload"
    return type(name, (env.CommandCommonSerializer, specific), {"__doc__": f"Payload of a `{command_type}` command."})


COMMAND_PAYLOADS = {ctype: _command_payload_doc(ctype, cls) for ctype, cls in env.PAYLOAD_SERIALIZERS.items()}

CommandPayloadDoc = PolymorphicProxySerializer(
    component_name="CommandPayload",
    serializers=list(COMMAND_PAYLOADS.values()),
    resource_type_field_name="command_type",
)


class CommandRequestDoc(env.RequestSerializer):
    type = serializers.ChoiceField(choices=["command"])


class PolicyRequestDoc(env.RequestSerializer):
    type = serializers.ChoiceField(choices=["policy_snapshot"])


class CommandEnvelopeDoc(env.EnvelopeSerializer):
    """A command envelope (PROTOCOL.md §4–5)."""

    request = CommandRequestDoc()
    payload = CommandPayloadDoc


class PolicyEnvelopeDoc(env.EnvelopeSerializer):
    """A policy snapshot envelope (RISK_RULES.md gives every field's meaning)."""

    request = PolicyRequestDoc()
    payload = env.PolicyPayloadSerializer()


InboundEnvelopeDoc = PolymorphicProxySerializer(
    component_name="InboundEnvelope",
    serializers=[CommandEnvelopeDoc, PolicyEnvelopeDoc],
    resource_type_field_name=None,
)

CommandBodyDoc = PolymorphicProxySerializer(
    component_name="CommandBody",
    serializers=[CommandEnvelopeDoc, env.LegacyFlatCommandSerializer],
    resource_type_field_name=None,
)

_PROBLEMS = {
    400: "Bad request: idempotency_key_required, idempotency_key_mismatch, invalid_idempotency_key, "
    "unsupported_protocol_version, malformed_json, tenant_required",
    401: "authentication_failed (WWW-Authenticate: Bearer)",
    403: "tenant_forbidden",
    404: "not_found, command_not_found, account_not_found",
    409: "duplicate_command_id, stale_policy_version, policy_version_conflict",
    413: "payload_too_large (over 256 KiB)",
    415: "unsupported_media_type (send application/json)",
    422: "validation_failed (one errors entry per field), idempotency_key_reused, ambiguous_account",
    429: "rate_limited (Retry-After)",
    503: "mt5_unavailable; database_unavailable (Retry-After: retry with the same idempotency key)",
}


def problems(*statuses: int) -> dict[int, OpenApiResponse]:
    return {status: OpenApiResponse(ProblemSerializer, description=_PROBLEMS[status]) for status in statuses}


POST_PROBLEMS = problems(400, 401, 403, 404, 409, 413, 415, 422, 429, 503)
GET_PROBLEMS = problems(400, 401, 403, 404, 422, 429, 503)

PANEL_CLOSE_POSITIONS = OpenApiExample(
    "close_positions (the panel's example)", request_only=True, value=examples.CLOSE_POSITIONS
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
