"""The envelope of PROTOCOL.md §4 and every payload it carries: the schema, one serializer per message.

Unknown keys are ignored (forward compatibility); missing or mistyped ones become one `errors`
entry each. Timestamps with an offset are converted to UTC. The code that runs these schemas on
a request (a compiled fast path, DRF as the judge) is `commands.validation`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.utils.dateparse import parse_datetime
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from commands.models import CommandType, Priority
from policies import hooks as policy_hooks

MAX_VOLUME = Decimal("1000")
MAX_PRICE = Decimal("100000000")


NO_TIME_ZONE = "Must have a time zone: Z or an offset such as +02:00."


def parse_utc(raw: str) -> datetime | None:
    """An ISO-8601 timestamp with Z or an offset, in UTC; None when it is none: no time zone (a
    wall clock of where?), no such date, or outside the years UTC can hold."""
    try:
        parsed = parse_datetime(raw)
    except ValueError:  # the shape of a timestamp, but no such date (year 0, month 13)
        return None
    if parsed is None or parsed.utcoffset() is None:
        return None
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        return None


class UtcDateTimeField(serializers.DateTimeField):
    """ISO-8601 with a time zone in, UTC out: an offset other than Z is converted on intake, and a
    timestamp without one is refused (PROTOCOL §1: every timestamp is UTC or says its offset)."""

    def to_internal_value(self, value: Any):  # noqa: ANN201
        if isinstance(value, str):
            try:
                naive = (parsed := parse_datetime(value)) is not None and parsed.utcoffset() is None
            except ValueError:
                naive = False  # DRF words "no such date"
            if naive:
                raise serializers.ValidationError(NO_TIME_ZONE)
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
        above: Decimal | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.min_value = min_value
        self.max_value = max_value
        self.decimal_places = decimal_places
        self.above = above

    def to_internal_value(self, data: Any) -> Decimal:
        if isinstance(data, bool) or not isinstance(data, int | float):
            raise serializers.ValidationError("Must be a number.")
        value = Decimal(str(data))
        if not value.is_finite():
            raise serializers.ValidationError("Must be a finite number.")
        if self.min_value is not None and value < self.min_value:
            raise serializers.ValidationError(f"Must be at least {self.min_value}.")
        if self.above is not None and value <= self.above:
            raise serializers.ValidationError(f"Must be more than {self.above}.")
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


# PROTOCOL §9 "Command ids": 1–64 characters a URL path segment carries as they are, so every
# accepted command reads back at GET /mt5/commands/{command_id}; "." and ".." are path steps.
COMMAND_ID_PATTERN = r"\A(?!\.+\Z)[A-Za-z0-9._:-]+\Z"  # and max_length=64
COMMAND_ID_RULE = "1–64 characters of A–Z, a–z, 0–9, '.', '_', ':' and '-' (not dots alone)."


def CommandId() -> serializers.RegexField:  # a field factory, named as the fields are
    return serializers.RegexField(
        COMMAND_ID_PATTERN,
        max_length=64,
        trim_whitespace=False,
        error_messages={"invalid": COMMAND_ID_RULE, "max_length": COMMAND_ID_RULE},
        help_text=COMMAND_ID_RULE,
    )


class CommandCommonSerializer(serializers.Serializer):
    command_id = CommandId()
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

    command_id = CommandId()
    tenant_id = Text(max_length=64)
    account_id = StrictIntegerField(min_value=1, max_value=2**63 - 1)
    command_type = serializers.ChoiceField(choices=CommandType.choices)
    payload = serializers.DictField(required=False, default=dict)
    issued_at = UtcDateTimeField(required=False, allow_null=True)


# --- Policy snapshot payload (RISK_RULES.md) ---------------------------------------------------


# A percent is > 0 and <= 100 (RISK_RULES v2); null, where allowed, turns its rule off.
Percent = lambda **kw: NumberField(above=Decimal("0"), max_value=Decimal("100"), **kw)  # noqa: E731
# Below 10^12: the risk state stores money as numeric(20, 8) (an amount of 10^12 would overflow it).
MONEY_MAX = Decimal("999999999999.99")
Money = lambda **kw: NumberField(min_value=Decimal("0"), max_value=MONEY_MAX, decimal_places=2, **kw)  # noqa: E731
LocalTime = lambda **kw: serializers.TimeField(format="%H:%M", input_formats=["%H:%M", "%H:%M:%S"], **kw)  # noqa: E731
Lots = lambda **kw: NumberField(above=Decimal("0"), max_value=MAX_VOLUME, **kw)  # noqa: E731


class EnforcementFlagsSerializer(serializers.Serializer):
    close_position_on_single_trade_breach = StrictBooleanField()
    close_all_on_daily_dd = StrictBooleanField()
    close_all_on_total_dd = StrictBooleanField(required=False, default=True)
    disable_trading_on_breach = StrictBooleanField()
    # RISK_RULES v2 "More rules": absent means true. No default here, so a stored snapshot's
    # payload (and its fingerprint) is what Laravel sent.
    close_excess_positions = StrictBooleanField(
        required=False, help_text="Close positions beyond max_open_positions, newest first (absent: true)."
    )
    close_oversized_positions = StrictBooleanField(
        required=False, help_text="Close the volume above max_position_volume (absent: true)."
    )
    close_positions_without_sl = StrictBooleanField(
        required=False, help_text="Close a position without a stop loss after the grace (absent: true)."
    )
    close_all_before_weekend = StrictBooleanField(
        required=False, help_text="Close all past close_before_weekend on Friday (absent: true)."
    )


class PolicyPayloadSerializer(serializers.Serializer):
    """A policy snapshot's payload; every field's meaning is RISK_RULES.md (v2 fields optional)."""

    account_status = Text(max_length=32)
    policy_version = StrictIntegerField(min_value=1, max_value=2**31 - 1)
    initial_balance_snapshot = Money()
    daily_starting_balance = Money()
    daily_starting_balance_date = serializers.DateField()
    max_daily_dd_pct = Percent(allow_null=True, help_text="Above 0, at most 100; null turns the rule off.")
    max_total_dd_pct = Percent(allow_null=True, help_text="Above 0, at most 100; null turns the rule off.")
    drawdown_type = serializers.ChoiceField(choices=["equity", "balance"])
    lock_trailing_drawdown = StrictBooleanField()
    trailing_drawdown = StrictBooleanField(required=False)
    daily_dd_base = serializers.ChoiceField(choices=["starting_balance", "initial_balance"], required=False)
    daily_reset_time_utc = LocalTime(required=False)
    max_single_trade_loss_pct = Percent(allow_null=True, help_text="Above 0, at most 100; null turns the rule off.")
    max_single_trade_loss_violations_allowed = StrictIntegerField(min_value=0, max_value=1_000_000)
    current_single_trade_exceed_count = StrictIntegerField(min_value=0, max_value=1_000_000)
    high_water_mark = Money(required=False, allow_null=True)
    enforcement_flags = EnforcementFlagsSerializer()
    # Rules v2: the trading day in a named time zone.
    daily_reset_timezone = Text(
        max_length=64,
        required=False,
        allow_null=True,
        help_text="IANA name (Europe/Prague); absent: daily_reset_time_utc in UTC.",
    )
    daily_reset_time = LocalTime(
        required=False, allow_null=True, help_text="Local HH:MM in daily_reset_timezone (absent: 00:00)."
    )
    daily_reference_fallback = serializers.ChoiceField(
        choices=["balance", "equity", "max_balance_equity"],
        required=False,
        help_text="D the bridge takes at the reset when Laravel's snapshot is late (absent: balance).",
    )
    # Rules v2: trailing drawdown as the firms define it; the breach boundary; reinstatement.
    trailing_source = serializers.ChoiceField(
        choices=["equity", "balance", "eod_balance"],
        required=False,
        help_text="What the high-water mark follows (absent: drawdown_type).",
    )
    trailing_lock_offset = Money(required=False, help_text="With the lock, the floor stops at I + this (absent: 0).")
    breach_at_floor = StrictBooleanField(
        required=False, help_text="Reaching the floor is a breach (absent: false, strictly below)."
    )
    reinstate = StrictBooleanField(
        required=False, help_text="Lift a lifetime breach and take the violation count from this snapshot."
    )
    # Rules v2: more rules, each off when absent or null.
    max_open_positions = StrictIntegerField(
        min_value=0, max_value=10_000, required=False, allow_null=True, help_text="Absent or null: off."
    )
    max_position_volume = Lots(required=False, allow_null=True, help_text="Lots; absent or null: off.")
    max_total_volume = Lots(required=False, allow_null=True, help_text="Open lots; absent or null: off.")
    require_stop_loss = StrictBooleanField(
        required=False, help_text="Refuse opens without a stop loss; close such positions after the grace."
    )
    stop_loss_grace_seconds = StrictIntegerField(min_value=0, max_value=86_400, required=False, help_text="Absent: 30.")
    close_before_weekend = LocalTime(
        required=False, allow_null=True, help_text="Local HH:MM on Friday, in the reset time zone; absent or null: off."
    )
    profit_target_pct = NumberField(
        above=Decimal("0"),
        max_value=Decimal("1000"),
        required=False,
        allow_null=True,
        help_text="Reported when M reaches I x (1 + pct%); absent or null: off.",
    )

    def validate_daily_reset_timezone(self, value: str | None) -> str | None:
        if value is not None:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError):
                raise serializers.ValidationError("Must be an IANA time zone name, such as Europe/Prague.") from None
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        # What needs the risk engine's calendar (a starting-balance date after the current
        # trading day) is its to judge, through the hook it answers.
        objections = policy_hooks.policy_objections(attrs)
        if objections:
            raise serializers.ValidationError(dict(objections))
        return attrs
