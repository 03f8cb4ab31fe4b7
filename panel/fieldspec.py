"""Describe the API's own serializers as plain data, for the builder's form and the catalogue.

Nothing here restates a rule: kinds, required flags, defaults, choices and limits are read off
the DRF fields that validate requests (commands.envelope), so the panel cannot drift from the API.
"""

from __future__ import annotations

from typing import Any

from rest_framework import serializers
from rest_framework.fields import empty

from commands import envelope as env
from commands.lanes import lane_for
from commands.models import CommandType

# Filled in by the builder itself, not typed by the user.
BUILDER_OWNED = frozenset({"command_id", "command_type"})


def _kind(field: serializers.Field) -> str:
    if isinstance(field, serializers.BaseSerializer):
        return "object"
    if isinstance(field, serializers.ChoiceField):
        return "choice"
    if isinstance(field, serializers.BooleanField):
        return "boolean"
    if isinstance(field, serializers.IntegerField):
        return "integer"
    if isinstance(field, env.NumberField):
        return "number"
    if isinstance(field, serializers.ListField):
        return "list"
    if isinstance(field, serializers.DictField):
        return "json"
    if isinstance(field, serializers.DateTimeField):
        return "datetime"
    if isinstance(field, serializers.DateField):
        return "date"
    if isinstance(field, serializers.TimeField):
        return "time"
    if isinstance(field, serializers.UUIDField):
        return "uuid"
    return "text"


def _jsonable_default(value: Any) -> Any:
    if value is empty or callable(value):
        return None
    return value


def field_spec(name: str, field: serializers.Field) -> dict[str, Any]:
    """One field as data: name, kind, required, default, choices, limits, nested fields."""
    spec: dict[str, Any] = {
        "name": name,
        "kind": _kind(field),
        "required": bool(field.required),
        "default": _jsonable_default(field.default),
        "allow_null": bool(getattr(field, "allow_null", False)),
        "help": str(field.help_text or ""),
    }
    if isinstance(field, serializers.ChoiceField):
        spec["choices"] = [str(choice) for choice in field.choices]
    for limit in ("min_value", "max_value", "max_length", "above"):
        value = getattr(field, limit, None)
        if value is not None:
            spec[limit] = float(value) if not isinstance(value, int) else value
    if isinstance(field, serializers.ListField):
        spec["child"] = field_spec("item", field.child)
        if field.max_length is not None:
            spec["max_items"] = field.max_length
    if isinstance(field, serializers.Serializer):
        spec["fields"] = serializer_spec(type(field))
    return spec


def serializer_spec(
    serializer_class: type[serializers.Serializer], *, skip: frozenset[str] = frozenset()
) -> list[dict[str, Any]]:
    return [field_spec(name, field) for name, field in serializer_class().fields.items() if name not in skip]


def command_common_spec() -> list[dict[str, Any]]:
    """The fields every command carries (priority, fast_lane, reason, expires_at_utc)."""
    return serializer_spec(env.CommandCommonSerializer, skip=BUILDER_OWNED)


def command_specific_spec(command_type: str) -> list[dict[str, Any]]:
    return serializer_spec(env.PAYLOAD_SERIALIZERS[command_type])


def policy_spec() -> list[dict[str, Any]]:
    return serializer_spec(env.PolicyPayloadSerializer)


def flat_spec() -> list[dict[str, Any]]:
    return serializer_spec(env.LegacyFlatCommandSerializer)


def default_lane(command_type: str) -> str:
    """The lane a command of this type takes with the default priority and no fast_lane flag."""
    common = env.CommandCommonSerializer().fields
    return str(
        lane_for(
            priority=str(common["priority"].default),
            fast_lane=bool(common["fast_lane"].default),
            raised_by_bridge=False,
        )
    )


COMMAND_TYPES: list[str] = [str(value) for value in CommandType.values]
