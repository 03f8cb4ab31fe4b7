"""Describe the API's own request models as plain data, for the builder's form and the catalogue.

Nothing here restates a rule: kinds, required flags, defaults, choices and limits are read off
the JSON Schema of the pydantic models that validate requests (commands.schema, policies.schema)
— the same schema the OpenAPI document shows — so the panel cannot drift from the API.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from bridgeproject.schema import CLOCK_PATTERN
from commands.lanes import lane_for
from commands.models import CommandType
from commands.schema import COMMON_FIELDS, PAYLOAD_MODELS, CommandCommon, LegacyFlatCommand
from policies.schema import PolicyPayload

# Filled in by the builder itself, not typed by the user.
BUILDER_OWNED = frozenset({"command_id", "command_type"})


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    return defs[ref.rsplit("/", 1)[1]] if ref else node


def _kind(node: dict[str, Any]) -> str:
    kind = node.get("type")
    if "enum" in node or "const" in node:
        return "choice"
    if kind == "object" and "properties" in node:
        return "object"
    if kind == "object":
        return "json"
    if kind == "string":
        fmt = node.get("format")
        if fmt == "date-time":
            return "datetime"
        if fmt in ("date", "uuid"):
            return str(fmt)
        if node.get("pattern") == CLOCK_PATTERN:
            return "time"
        return "text"
    if kind == "array":
        return "list"
    if kind in ("integer", "number", "boolean"):
        return str(kind)
    return "text"


def field_spec(name: str, node: dict[str, Any], *, required: bool, defs: dict[str, Any]) -> dict[str, Any]:
    """One field as data: name, kind, required, default, choices, limits, nested fields."""
    options = [_resolve(option, defs) for option in node.get("anyOf", [node])]
    allow_null = any(option.get("type") == "null" for option in options)
    value = next((option for option in options if option.get("type") != "null"), {})
    spec: dict[str, Any] = {
        "name": name,
        "kind": _kind(value),
        "required": required,
        "default": node.get("default"),
        "allow_null": allow_null,
        "help": str(node.get("description") or value.get("description") or ""),
    }
    if "enum" in value or "const" in value:
        spec["choices"] = [str(choice) for choice in value.get("enum", [value.get("const")])]
    for limit, key in (
        ("minimum", "min_value"),
        ("maximum", "max_value"),
        ("maxLength", "max_length"),
        ("exclusiveMinimum", "above"),
    ):
        if limit in value:
            spec[key] = value[limit]
    if spec["kind"] == "list":
        spec["child"] = field_spec("item", value.get("items", {}), required=True, defs=defs)
        if "maxItems" in value:
            spec["max_items"] = value["maxItems"]
    if spec["kind"] == "object":
        spec["fields"] = _object_spec(value, defs)
    return spec


def _object_spec(
    node: dict[str, Any], defs: dict[str, Any], skip: frozenset[str] = frozenset()
) -> list[dict[str, Any]]:
    required = set(node.get("required", []))
    return [
        field_spec(name, child, required=name in required, defs=defs)
        for name, child in node.get("properties", {}).items()
        if name not in skip
    ]


def model_spec(model: type[BaseModel], *, skip: frozenset[str] = frozenset()) -> list[dict[str, Any]]:
    schema = model.model_json_schema(mode="validation")
    return _object_spec(schema, schema.get("$defs", {}), skip)


def command_common_spec() -> list[dict[str, Any]]:
    """The fields every command carries (priority, fast_lane, reason, expires_at_utc)."""
    return model_spec(CommandCommon, skip=BUILDER_OWNED)


def command_specific_spec(command_type: str) -> list[dict[str, Any]]:
    return model_spec(PAYLOAD_MODELS[command_type], skip=COMMON_FIELDS)


def policy_spec() -> list[dict[str, Any]]:
    return model_spec(PolicyPayload)


def flat_spec() -> list[dict[str, Any]]:
    return model_spec(LegacyFlatCommand)


def default_lane(command_type: str) -> str:
    """The lane a command of this type takes with the default priority and no fast_lane flag."""
    common = CommandCommon.model_fields
    return str(
        lane_for(
            priority=str(common["priority"].default),
            fast_lane=bool(common["fast_lane"].default),
            raised_by_bridge=False,
        )
    )


COMMAND_TYPES: list[str] = [str(value) for value in CommandType.values]
