"""Running the envelope's schemas (`commands.envelope`) on a request body.

A compiled validator (`commands.fastvalidate`) answers for the bodies it can vouch for; anything
else goes through DRF, which decides and reports every field error. Both give the same result.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from rest_framework import serializers

from commands import fastvalidate
from commands.envelope import (
    PAYLOAD_SERIALIZERS,
    CommandCommonSerializer,
    EnvelopeSerializer,
    LegacyFlatCommandSerializer,
    NumberField,
    PolicyPayloadSerializer,
    StrictBooleanField,
    StrictIntegerField,
    UtcDateTimeField,
)

logger = logging.getLogger(__name__)

# This module's fields validate in `to_internal_value` alone (pure functions of the value), so
# the compiler calls them instead of restating their rules; UtcDateTimeField is restated (as
# DRF's parse then UTC) because DRF's path through the current timezone is a third of the cost.
fastvalidate.register_by_to_internal_value(StrictIntegerField, StrictBooleanField, NumberField)
fastvalidate.register(UtcDateTimeField, fastvalidate.utc_datetime)

_fast: dict[type[serializers.Serializer], Callable[[Any], Any] | None] = {}


def fast_validator(serializer_class: type[serializers.Serializer]) -> Callable[[Any], Any] | None:
    """The compiled validator for `serializer_class`, or None when it must go through DRF alone."""
    try:
        return _fast[serializer_class]
    except KeyError:
        pass
    try:
        validator: Callable[[Any], Any] | None = fastvalidate.compile_serializer(serializer_class)
    except fastvalidate.NotCompilable as exc:
        logger.warning("validation of %s stays on DRF alone: %s", serializer_class.__name__, exc)
        validator = None
    _fast[serializer_class] = validator
    return validator


_local = threading.local()


def bound(serializer_class: type[serializers.Serializer], data: Any) -> serializers.Serializer:
    """A serializer for `data`, reusing this thread's instance of the class.

    A DRF serializer deep-copies its declared fields for every new instance — a sixth of an
    accepted command's CPU here. Its fields keep no per-call state, so one instance per thread
    and class can validate request after request once its previous results are dropped.
    """
    cache: dict[type, serializers.Serializer] | None = getattr(_local, "serializers", None)
    if cache is None:
        cache = _local.serializers = {}
    serializer = cache.get(serializer_class)
    if serializer is None:
        serializer = cache[serializer_class] = serializer_class()
    for attribute in ("_validated_data", "_errors", "_data"):
        serializer.__dict__.pop(attribute, None)
    serializer.initial_data = data
    return serializer


def fast_validate(serializer_class: type[serializers.Serializer], data: Any) -> dict[str, Any] | None:
    """What DRF's validated_data would be when the compiled validator vouches for `data`, else None."""
    validator = fast_validator(serializer_class)
    if validator is None:
        return None
    try:
        result = validator(data)
        return result if type(result) is dict else dict(result)
    except Exception:  # whatever the fast path trips on, DRF decides and reports
        return None


def drf_validate_with(serializer_class: type[serializers.Serializer], data: Any, prefix: str) -> dict[str, Any]:
    """validate_with through DRF alone."""
    serializer = bound(serializer_class, data)
    if not serializer.is_valid():
        raise serializers.ValidationError({prefix: serializer.errors} if prefix else serializer.errors)
    return dict(serializer.validated_data)


def validate_with(serializer_class: type[serializers.Serializer], data: Any, prefix: str) -> dict[str, Any]:
    """Validate `data`; raise DRF ValidationError with field names under `prefix`."""
    result = fast_validate(serializer_class, data)
    if result is not None:
        return result
    return drf_validate_with(serializer_class, data, prefix)


def drf_validate_command_payload(payload: Any, prefix: str = "payload") -> tuple[dict[str, Any], dict[str, Any]]:
    """validate_command_payload through DRF alone."""
    common_serializer = bound(CommandCommonSerializer, payload)
    common_ok = common_serializer.is_valid()
    errors: dict[str, Any] = {} if common_ok else dict(common_serializer.errors)
    specific: dict[str, Any] = {}
    command_type = payload.get("command_type") if isinstance(payload, dict) else None
    # A command_type that is no string (a list, say) is the common serializer's error to report.
    specific_class = PAYLOAD_SERIALIZERS.get(command_type) if isinstance(command_type, str) else None
    if specific_class is not None:
        specific_serializer = bound(specific_class, payload)
        if specific_serializer.is_valid():
            specific = dict(specific_serializer.validated_data)
        else:
            errors.update(specific_serializer.errors)
    if errors:
        raise serializers.ValidationError({prefix: errors})
    return dict(common_serializer.validated_data), specific


def fast_validate_command_payload(payload: Any) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """validate_command_payload's result when the compiled validators vouch for all of `payload`, else None."""
    common = fast_validate(CommandCommonSerializer, payload)
    if common is None:
        return None
    specific_class = PAYLOAD_SERIALIZERS.get(payload.get("command_type"))
    if specific_class is None:
        return common, {}
    specific = fast_validate(specific_class, payload)
    if specific is None:
        return None
    return common, specific


def validate_command_payload(payload: Any, prefix: str = "payload") -> tuple[dict[str, Any], dict[str, Any]]:
    """The common command fields and the type-specific ones, validated together."""
    result = fast_validate_command_payload(payload)
    if result is not None:
        return result
    return drf_validate_command_payload(payload, prefix)


# Compiled at import, so a serializer the compiler refuses is logged once at start-up.
_COMPILED_AT_IMPORT: tuple[type[serializers.Serializer], ...] = (
    EnvelopeSerializer,
    LegacyFlatCommandSerializer,
    CommandCommonSerializer,
    PolicyPayloadSerializer,
    *PAYLOAD_SERIALIZERS.values(),
)
for _serializer_class in _COMPILED_AT_IMPORT:
    fast_validator(_serializer_class)
