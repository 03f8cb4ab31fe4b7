"""Running the request models (`commands.schema`, `policies.schema`) on a request body.

Each function returns the validated values as plain dicts (Decimals, UTC datetimes) or raises the
422 `validation_failed` problem with one `errors` entry per bad field, fields dotted under the
body's own names (`payload.target.symbols`).
"""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter, ValidationError

from bridgeproject.errors import BridgeError, validation_error
from bridgeproject.schema import RequestModel, field_errors
from commands.schema import COMMON_FIELDS, AnyCommandPayload, CommandCommon, Envelope, LegacyFlatCommand
from policies import hooks as policy_hooks
from policies.schema import PolicyPayload

_command_payload: TypeAdapter[Any] = TypeAdapter(AnyCommandPayload)
_TAG_ERRORS = frozenset({"union_tag_invalid", "union_tag_not_found", "model_attributes_type"})


def _validated(model: type[RequestModel], data: Any, prefix: str) -> dict[str, Any]:
    try:
        return model.model_validate(data).data()
    except ValidationError as exc:
        raise validation_error(field_errors(exc, prefix)) from None


def validate_envelope(body: Any) -> dict[str, Any]:
    """An envelope's meta, actor, context and request; its payload stays as sent."""
    return _validated(Envelope, body, "")


def validate_flat(body: Any) -> dict[str, Any]:
    """The legacy flat body (the panel's PowerShell quick test)."""
    return _validated(LegacyFlatCommand, body, "")


def validate_command_payload(payload: Any, prefix: str = "payload") -> tuple[dict[str, Any], dict[str, Any]]:
    """The common command fields and the type-specific ones, validated together by the model its
    `command_type` names."""
    try:
        values = _command_payload.validate_python(payload).data()
    except ValidationError as exc:
        if any(error["type"] in _TAG_ERRORS and not error["loc"] for error in exc.errors()):
            # No model to pick: the fields every command carries say what is wrong.
            raise _validated_common_errors(payload, prefix) from None
        raise validation_error(field_errors(exc, prefix, skip=1)) from None
    common = {name: value for name, value in values.items() if name in COMMON_FIELDS}
    specific = {name: value for name, value in values.items() if name not in COMMON_FIELDS}
    return common, specific


def _validated_common_errors(payload: Any, prefix: str) -> BridgeError:
    try:
        CommandCommon.model_validate(payload)
    except ValidationError as exc:
        return validation_error(field_errors(exc, prefix))
    # The union refused a payload the common fields accept: only the tag can be the cause.
    return validation_error([{"field": f"{prefix}.command_type", "message": "Not a command type."}])


def validate_policy_payload(payload: Any, prefix: str = "payload") -> dict[str, Any]:
    """A policy snapshot's payload, then what the risk engine objects to (a starting balance date
    after the current trading day)."""
    values = _validated(PolicyPayload, payload, prefix)
    objections = policy_hooks.policy_objections(values)
    if objections:
        raise validation_error([{"field": f"{prefix}.{field}", "message": message} for field, message in objections])
    return values
