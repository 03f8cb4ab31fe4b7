"""The envelope of PROTOCOL.md §4 and every payload it carries, validated in one place.

Unknown keys are ignored (forward compatibility); missing or mistyped ones become one `errors`
entry each. Timestamps with an offset are converted to UTC.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC
from decimal import Decimal
from typing import Any, cast

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from commands import fastvalidate
from commands.models import CommandType, Priority

logger = logging.getLogger(__name__)

MAX_VOLUME = Decimal("1000")
MAX_PRICE = Decimal("100000000")


class UtcDateTimeField(serializers.DateTimeField):
    """ISO-8601 in, UTC out: an offset other than Z is converted on intake."""

    def to_internal_value(self, value: Any):  # noqa: ANN201
        parsed = super().to_internal_value(value)
        return parsed.astimezone(UTC)


class StrictIntegerField(serializers.IntegerField):
    """An integer that must arrive as a JSON integer: no "42", no 42.5, no true."""

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            raise serializers.ValidationError("Must be true or false.")
        return data


@extend_schema_field(OpenApiTypes.NUMBER)
class NumberField(serializers.Field):
    """A JSON number (int or float, never a string or bool), kept exactly as a Decimal."""

    def __init__(
        self,
        *,
        min_value: Decimal | None = None,
        max_value: Decimal | None = None,
        decimal_places: int = 8,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.min_value = min_value
        self.max_value = max_value
        self.decimal_places = decimal_places

    def to_internal_value(self, data: Any) -> Decimal:
        if isinstance(data, bool) or not isinstance(data, int | float):
            raise serializers.ValidationError("Must be a number.")
        value = Decimal(str(data))
        if not value.is_finite():
            raise serializers.ValidationError("Must be a finite number.")
        if self.min_value is not None and value < self.min_value:
            raise serializers.ValidationError(f"Must be at least {self.min_value}.")
        if self.max_value is not None and value > self.max_value:
            raise serializers.ValidationError(f"Must be at most {self.max_value}.")
        # A finite Decimal's exponent is an int (only NaN and infinities have a letter there).
        if -cast(int, value.as_tuple().exponent) > self.decimal_places:
            raise serializers.ValidationError(f"At most {self.decimal_places} decimal places.")
        return value

    def to_representation(self, value: Any) -> Any:
        return value


def _printable(value: str) -> None:
    if not value.isprintable():
        raise serializers.ValidationError("Must not contain control characters.")


class Text(serializers.CharField):
    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("max_length", 255)
        kwargs.setdefault("trim_whitespace", False)
        super().__init__(**kwargs)
        self.validators.append(_printable)


# --- Envelope parts -------------------------------------------------------------------------


class MetaSerializer(serializers.Serializer):
    protocol_version = Text(max_length=16)
    request_id = serializers.UUIDField(format="hex_verbose")
    correlation_id = Text(max_length=128)
    idempotency_key = Text(required=False)
    tenant_id = Text(max_length=64)
    environment = Text(max_length=32)
    source = Text(max_length=32)  # type: ignore[assignment]  # a declared field, not Field.source: DRF's metaclass moves it into _declared_fields
    sent_at_utc = UtcDateTimeField()

    def validate_protocol_version(self, value: str) -> str:
        major, _, minor = value.partition(".")
        if major != "1" or (minor and not minor.isdigit()):
            raise serializers.ValidationError("Must be 1.x.")
        return value


class ActorSerializer(serializers.Serializer):
    trading_account_id = Text(max_length=64)
    account_login = StrictIntegerField(min_value=1, max_value=2**63 - 1)
    server = Text(max_length=128)
    platform = serializers.ChoiceField(choices=["MT5"])


class ContextSerializer(serializers.Serializer):
    session_id = Text(max_length=128)
    terminal_id = Text(max_length=128, required=False, allow_blank=True)
    correlation_group = Text(max_length=128)


class RequestSerializer(serializers.Serializer):
    type = serializers.ChoiceField(choices=["command", "policy_snapshot"])
    version = serializers.ChoiceField(choices=["1"])


class EnvelopeSerializer(serializers.Serializer):
    meta = MetaSerializer()
    actor = ActorSerializer()
    context = ContextSerializer()  # type: ignore[assignment]  # a declared field, not Field.context: DRF's metaclass moves it into _declared_fields
    request = RequestSerializer()
    payload: serializers.Field = serializers.DictField()  # the documentation subclasses declare it precisely


# --- Command payloads (PROTOCOL.md §5) --------------------------------------------------------

Volume = lambda **kw: NumberField(min_value=Decimal("0.01"), max_value=MAX_VOLUME, **kw)  # noqa: E731
Price = lambda **kw: NumberField(min_value=Decimal("0"), max_value=MAX_PRICE, **kw)  # noqa: E731
Ticket = lambda **kw: StrictIntegerField(min_value=1, max_value=2**63 - 1, **kw)  # noqa: E731
Symbol = lambda **kw: Text(max_length=32, **kw)  # noqa: E731


class CommandCommonSerializer(serializers.Serializer):
    command_id = Text()
    command_type = serializers.ChoiceField(choices=CommandType.choices)
    priority = serializers.ChoiceField(choices=Priority.choices, default=Priority.NORMAL)
    fast_lane = StrictBooleanField(default=False)
    reason = Text(required=False, allow_blank=True, default="")
    expires_at_utc = UtcDateTimeField(required=False, allow_null=True, default=None)


class OpenPositionSerializer(serializers.Serializer):
    symbol = Symbol()
    direction = serializers.ChoiceField(choices=["buy", "sell"])
    volume = Volume()
    open_price = Price(required=False, allow_null=True)
    stop_loss = Price(required=False, allow_null=True)
    take_profit = Price(required=False, allow_null=True)
    comment = Text(required=False, allow_blank=True, max_length=64)
    max_slippage_points = StrictIntegerField(required=False, min_value=0, max_value=100_000)


class ClosePositionSerializer(serializers.Serializer):
    ticket = Ticket()
    volume = Volume(required=False, allow_null=True)


class TargetSerializer(serializers.Serializer):
    mode = serializers.ChoiceField(choices=["all_positions", "by_symbol", "by_tickets", "losing", "profitable"])
    symbols = serializers.ListField(child=Symbol(), required=False, max_length=100)
    tickets = serializers.ListField(child=Ticket(), required=False, max_length=1000)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs["mode"] == "by_symbol" and not attrs.get("symbols"):
            raise serializers.ValidationError({"symbols": "Required when mode is by_symbol."})
        if attrs["mode"] == "by_tickets" and not attrs.get("tickets"):
            raise serializers.ValidationError({"tickets": "Required when mode is by_tickets."})
        return attrs


class ExecutionFlagsSerializer(serializers.Serializer):
    allow_partial_close = StrictBooleanField(default=False)
    close_only_profitable = StrictBooleanField(default=False)
    force_market = StrictBooleanField(default=True)


class ClosePositionsSerializer(serializers.Serializer):
    target = TargetSerializer()
    execution = ExecutionFlagsSerializer(required=False)


class ModifyPositionSerializer(serializers.Serializer):
    ticket = Ticket()
    stop_loss = Price(required=False, allow_null=True)
    take_profit = Price(required=False, allow_null=True)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if "stop_loss" not in attrs and "take_profit" not in attrs:
            raise serializers.ValidationError({"stop_loss": "Give stop_loss, take_profit or both."})
        return attrs


class CancelOrdersSerializer(serializers.Serializer):
    tickets = serializers.ListField(child=Ticket(), required=False, max_length=1000)


class EmptyPayloadSerializer(serializers.Serializer):
    pass


PAYLOAD_SERIALIZERS: dict[str, type[serializers.Serializer]] = {
    CommandType.OPEN_POSITION: OpenPositionSerializer,
    CommandType.CLOSE_POSITION: ClosePositionSerializer,
    CommandType.CLOSE_POSITIONS: ClosePositionsSerializer,
    CommandType.MODIFY_POSITION: ModifyPositionSerializer,
    CommandType.CANCEL_ORDERS: CancelOrdersSerializer,
    CommandType.DISABLE_TRADING: EmptyPayloadSerializer,
    CommandType.ENABLE_TRADING: EmptyPayloadSerializer,
    CommandType.SYNC_ACCOUNT: EmptyPayloadSerializer,
}


class LegacyFlatCommandSerializer(serializers.Serializer):
    """The flat body of the panel's PowerShell quick test."""

    command_id = Text()
    tenant_id = Text(max_length=64)
    account_id = StrictIntegerField(min_value=1, max_value=2**63 - 1)
    command_type = serializers.ChoiceField(choices=CommandType.choices)
    payload = serializers.DictField(required=False, default=dict)
    issued_at = UtcDateTimeField(required=False, allow_null=True)


# --- Policy snapshot payload (RISK_RULES.md) ---------------------------------------------------


Percent = lambda **kw: NumberField(min_value=Decimal("0"), max_value=Decimal("100"), **kw)  # noqa: E731
Money = lambda **kw: NumberField(min_value=Decimal("0"), max_value=Decimal("1000000000000"), decimal_places=2, **kw)  # noqa: E731


class EnforcementFlagsSerializer(serializers.Serializer):
    close_position_on_single_trade_breach = StrictBooleanField()
    close_all_on_daily_dd = StrictBooleanField()
    close_all_on_total_dd = StrictBooleanField(required=False, default=True)
    disable_trading_on_breach = StrictBooleanField()


class PolicyPayloadSerializer(serializers.Serializer):
    account_status = Text(max_length=32)
    policy_version = StrictIntegerField(min_value=1, max_value=2**31 - 1)
    initial_balance_snapshot = Money()
    daily_starting_balance = Money()
    daily_starting_balance_date = serializers.DateField()
    max_daily_dd_pct = Percent()
    max_total_dd_pct = Percent()
    drawdown_type = serializers.ChoiceField(choices=["equity", "balance"])
    lock_trailing_drawdown = StrictBooleanField()
    trailing_drawdown = StrictBooleanField(required=False)
    daily_dd_base = serializers.ChoiceField(choices=["starting_balance", "initial_balance"], required=False)
    daily_reset_time_utc = serializers.TimeField(required=False, format="%H:%M", input_formats=["%H:%M", "%H:%M:%S"])
    max_single_trade_loss_pct = Percent()
    max_single_trade_loss_violations_allowed = StrictIntegerField(min_value=0, max_value=1_000_000)
    current_single_trade_exceed_count = StrictIntegerField(min_value=0, max_value=1_000_000)
    high_water_mark = Money(required=False, allow_null=True)
    enforcement_flags = EnforcementFlagsSerializer()


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
