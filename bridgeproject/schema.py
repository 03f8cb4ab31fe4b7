"""What every request model shares (ARCHITECTURE "Layering": one schema per message).

Each message is one pydantic model, declared by the app that owns it (`commands.schema` for the
envelope and the commands, `policies.schema` for the policy snapshot). That model validates the
body, produces every field error and is what the OpenAPI document is generated from; nothing
else restates its rules. This module holds the JSON value types they are built from, exactly as
strict as the protocol (a JSON integer is no "42" and no 42.0, a number is never a string, a
timestamp has a time zone), and turns pydantic's errors into the API's `errors` entries: one
`{field, message}` per bad field, fields dotted (`payload.target.symbols`, `tickets[0]`).

Only stdlib, pydantic and Django's pure date parsers: `risk.rules` reads stored snapshots with
these models and touches no Django.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal, InvalidOperation
from typing import Any

from django.utils.dateparse import parse_date, parse_datetime
from pydantic import BaseModel, ConfigDict, GetCoreSchemaHandler, GetJsonSchemaHandler, ValidationError
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

# Validation context of a payload the bridge stored itself (risk.rules re-reading a snapshot):
# numbers come back as the decimal strings `jsonutil.jsonable` wrote, and dates and times as
# ISO text or Python values; limits a later protocol tightened keep their old meaning.
STORED: dict[str, Any] = {"stored": True}


def _stored(info: core_schema.ValidationInfo) -> bool:
    return bool(info.context and info.context.get("stored"))


class RequestModel(BaseModel):
    """A request body's object. Unknown keys are ignored (forward compatibility); a text field
    takes a JSON number as its text (as the serializers did: a login sent as 1001 is "1001")."""

    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True, frozen=True)

    def data(self) -> dict[str, Any]:
        """The validated values as a dict: a field left out without a default stays out."""
        return self.model_dump()


# --- Value types (used as `Annotated[<python type>, <one of these>]`) -------------------------


def _number_as_text(value: Any) -> Any:
    # A choice takes a JSON number as its text ("version": 1 is "1"), as DRF's ChoiceField did.
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value


@dataclass(frozen=True, slots=True)
class OneOf:
    """A text that is one of `values`."""

    values: tuple[str, ...]

    def __init__(self, values: Iterable[Any]) -> None:
        object.__setattr__(self, "values", tuple(str(value) for value in values))

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_before_validator_function(
            _number_as_text, core_schema.literal_schema(list(self.values))
        )


def _printable(value: str) -> str:
    if not value.isprintable():
        raise PydanticCustomError("control_characters", "Must not contain control characters.")
    return value


@dataclass(frozen=True, slots=True)
class Text:
    """Printable text (no NUL, control character or lone surrogate), whitespace kept as sent."""

    max_length: int = 255
    blank: bool = False

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(
            _printable,
            core_schema.str_schema(min_length=0 if self.blank else 1, max_length=self.max_length),
        )


@dataclass(frozen=True, slots=True)
class Number:
    """A JSON number (int or float, never a string or a bool), kept exactly as a Decimal.

    `gt`/`ge`/`le` bound it, `places` limits its decimals. `stored_ge`: the lower bound of a
    stored payload (a percent stored as 0 before 0 was refused keeps its old meaning)."""

    ge: Decimal | None = None
    gt: Decimal | None = None
    le: Decimal | None = None
    places: int = 8
    stored_ge: Decimal | None = None

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.with_info_plain_validator_function(self.validate)

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        out: dict[str, Any] = {"type": "number"}
        if self.ge is not None:
            out["minimum"] = _json_number(self.ge)
        if self.gt is not None:
            out["exclusiveMinimum"] = _json_number(self.gt)
        if self.le is not None:
            out["maximum"] = _json_number(self.le)
        return out

    def validate(self, data: Any, info: core_schema.ValidationInfo) -> Decimal:
        stored = _stored(info)
        if isinstance(data, bool):
            raise PydanticCustomError("number_type", "Must be a number.")
        if isinstance(data, int | float):
            value = Decimal(str(data))
        elif stored and isinstance(data, Decimal):
            value = data
        elif stored and isinstance(data, str):
            try:
                value = Decimal(data.strip())
            except InvalidOperation:
                raise PydanticCustomError("number_type", "Must be a number.") from None
        else:
            raise PydanticCustomError("number_type", "Must be a number.")
        if not value.is_finite():
            raise PydanticCustomError("number_finite", "Must be a finite number.")
        if stored and self.stored_ge is not None:
            if value < self.stored_ge:
                raise PydanticCustomError("number_min", "Must be at least {ge}.", {"ge": str(self.stored_ge)})
        else:
            if self.ge is not None and value < self.ge:
                raise PydanticCustomError("number_min", "Must be at least {ge}.", {"ge": str(self.ge)})
            if self.gt is not None and value <= self.gt:
                raise PydanticCustomError("number_above", "Must be more than {gt}.", {"gt": str(self.gt)})
        if self.le is not None and value > self.le:
            raise PydanticCustomError("number_max", "Must be at most {le}.", {"le": str(self.le)})
        # A finite Decimal's exponent is an int (only NaN and infinities have a letter there). A
        # stored value passed this at intake; the rules round what they compare anyway.
        exponent = value.as_tuple().exponent
        if not stored and isinstance(exponent, int) and -exponent > self.places:
            raise PydanticCustomError("number_places", "At most {places} decimal places.", {"places": self.places})
        return value


def _json_number(value: Decimal) -> int | float:
    return int(value) if value == value.to_integral_value() else float(value)


NO_TIME_ZONE = "Must have a time zone: Z or an offset such as +02:00."
_DATETIME_FORMAT = (
    "Datetime has wrong format. Use one of these formats instead: YYYY-MM-DDThh:mm[:ss[.uuuuuu]][+HH:MM|-HH:MM|Z]."
)


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


def _utc_datetime(data: Any) -> datetime:
    if not isinstance(data, str):
        raise PydanticCustomError("datetime_format", _DATETIME_FORMAT)
    try:
        parsed = parse_datetime(data)
    except ValueError:  # the shape of a timestamp, but no such date
        parsed = None
    if parsed is None:
        raise PydanticCustomError("datetime_format", _DATETIME_FORMAT)
    if parsed.utcoffset() is None:
        raise PydanticCustomError("datetime_time_zone", NO_TIME_ZONE)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise PydanticCustomError("datetime_range", "Datetime value out of the range.") from None


@dataclass(frozen=True, slots=True)
class UtcTimestamp:
    """ISO-8601 with a time zone in, UTC out (PROTOCOL §1: every timestamp is UTC or says its offset)."""

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(_utc_datetime)

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {"type": "string", "format": "date-time"}


def _date(data: Any) -> date:
    if isinstance(data, date) and not isinstance(data, datetime):
        return data
    try:
        parsed = parse_date(data) if isinstance(data, str) else None
    except ValueError:
        parsed = None
    if parsed is None:
        raise PydanticCustomError("date_format", "Date has wrong format. Use one of these formats instead: YYYY-MM-DD.")
    return parsed


@dataclass(frozen=True, slots=True)
class IsoDate:
    """YYYY-MM-DD."""

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(_date)

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {"type": "string", "format": "date"}


def _local_time(data: Any) -> time:
    if isinstance(data, time):
        return data
    if isinstance(data, str):
        for form in ("%H:%M", "%H:%M:%S"):
            try:
                return datetime.strptime(data, form).time()
            except ValueError:
                pass
    raise PydanticCustomError("time_format", _TIME_FORMAT)


_TIME_FORMAT = "Time has wrong format. Use one of these formats instead: hh:mm, hh:mm:ss."


CLOCK_PATTERN = r"^\d{2}:\d{2}(:\d{2})?$"


@dataclass(frozen=True, slots=True)
class ClockTime:
    """A wall-clock time, HH:MM (or HH:MM:SS)."""

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(_local_time)

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {"type": "string", "pattern": CLOCK_PATTERN, "examples": ["22:00"]}


def _uuid(data: Any) -> uuid.UUID:
    try:
        if isinstance(data, uuid.UUID):
            return data
        if isinstance(data, int) and not isinstance(data, bool):
            return uuid.UUID(int=data)
        if isinstance(data, str):
            return uuid.UUID(hex=data)
    except ValueError:
        pass
    raise PydanticCustomError("uuid_format", "Must be a valid UUID.")


@dataclass(frozen=True, slots=True)
class AnyUuid:
    """A UUID in any form Python's uuid.UUID(hex=...) reads."""

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(_uuid)

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {"type": "string", "format": "uuid"}


def field_rule(field: str, message: str) -> PydanticCustomError:
    """An error a model's own check raises about one of its fields (a rule across fields)."""
    return PydanticCustomError("field_rule", message, {"field": field})


# --- Errors ----------------------------------------------------------------------------------

_MESSAGES: dict[str, str] = {
    "missing": "This field is required.",
    "int_type": "A valid integer is required.",
    "bool_type": "Must be true or false.",
    "string_type": "Not a valid string.",
    "string_too_short": "This field may not be blank.",
    "string_too_long": "Ensure this field has no more than {max_length} characters.",
    "greater_than_equal": "Ensure this value is greater than or equal to {ge}.",
    "greater_than": "Ensure this value is greater than {gt}.",
    "less_than_equal": "Ensure this value is less than or equal to {le}.",
    "too_long": "Ensure this field has no more than {max_length} elements.",
    "list_type": 'Expected a list of items but got type "{input_type}".',
    "dict_type": 'Expected a dictionary of items but got type "{input_type}".',
    "model_type": "Invalid data. Expected a dictionary, but got {input_type}.",
    "model_attributes_type": "Invalid data. Expected a dictionary, but got {input_type}.",
    "literal_error": '"{input}" is not a valid choice.',
}


def _message(error: Any) -> str:
    kind = error["type"]
    value = error.get("input")
    if value is None and kind != "missing" and "input" in error and kind != "field_rule":
        return "This field may not be null."
    template = _MESSAGES.get(kind)
    if template is None:
        return str(error["msg"])
    return template.format(**(error.get("ctx") or {}), input=value, input_type=type(value).__name__)


def dotted(prefix: str, loc: Iterable[Any]) -> str:
    name = prefix
    for part in loc:
        if isinstance(part, int):
            name = f"{name}[{part}]"
        else:
            name = f"{name}.{part}" if name else str(part)
    return name or "body"


def field_errors(exc: ValidationError, prefix: str = "", skip: int = 0) -> list[dict[str, str]]:
    """One {field, message} per error, fields dotted under `prefix`; `skip` drops that many leading
    location parts (a discriminated union's tag)."""
    out: list[dict[str, str]] = []
    for error in exc.errors(include_url=False):
        loc = list(error["loc"][skip:])
        field = (error.get("ctx") or {}).get("field") if error["type"] == "field_rule" else None
        if field:
            loc.append(field)
        out.append({"field": dotted(prefix, loc), "message": _message(error)})
    return out
