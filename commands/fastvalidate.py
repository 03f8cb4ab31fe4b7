"""Plain-Python validators compiled from DRF serializer declarations, for input DRF would accept.

DRF spends most of a request's validation in its own machinery (bound-field lookups, HTML-form
checks, per-character validators, error plumbing), not in the checks themselves. The compiler
reads each serializer's fields once and builds closures doing the same checks on a JSON-shaped
dict. A compiled validator either returns what `serializer.validated_data` would be, or raises
(any exception): the caller then runs DRF as before, so DRF stays the only producer of errors
and the fast path may decline anything it is unsure of.

Only field classes in the registry are compiled: a serializer holding any other field, or a
registered class whose subclass changes how a value is validated, is refused as a whole
(`NotCompilable`) rather than compiled with a check missing.
"""

from __future__ import annotations

import re
import sys
import uuid
from collections.abc import Callable
from datetime import UTC
from typing import Any, TypeVar, cast

import rest_framework
from django.conf import settings
from django.core import validators as django_validators
from django.utils.dateparse import parse_datetime
from rest_framework import ISO_8601, fields, serializers
from rest_framework.settings import api_settings
from rest_framework.validators import ProhibitSurrogateCharactersValidator

Converter = Callable[[Any], Any]
Check = Callable[[Any], None]
HandlerFactory = Callable[[fields.Field, tuple[Check, ...]], Converter]
_FieldT = TypeVar("_FieldT", bound=fields.Field)

# The inline handlers below restate DRF 3.18's own code; another series may validate differently.
DRF_SERIES = "3.18"

# Overriding any of these changes what a field or serializer accepts, so a class that does is
# only compiled when it is itself registered.
FIELD_BEHAVIOUR = frozenset(
    {"run_validation", "validate_empty_values", "get_value", "run_validators", "get_default", "to_internal_value"}
)
SERIALIZER_BEHAVIOUR = FIELD_BEHAVIOUR | {"is_valid", "validated_data", "set_value", "_writable_fields", "errors"}

# str(int) refuses more than sys.get_int_max_str_digits() digits, and DRF's IntegerField goes
# through str(); below this many bits no int can reach that limit, above it DRF decides.
_SAFE_INT_BITS = 14_000
_SAFE_INT_DIGITS = 4_215  # ceil(14_000 * log10(2))

_SURROGATE = re.compile("[\ud800-\udfff]")


class NotCompilable(Exception):
    """The serializer holds something the compiler cannot reproduce exactly."""


class Decline(Exception):
    """The fast path does not vouch for this input; DRF must look at it."""


_MISSING = object()


# --- Registry --------------------------------------------------------------------------------

_HANDLERS: dict[type, HandlerFactory] = {}


def register(field_class: type[_FieldT], factory: Callable[[_FieldT, tuple[Check, ...]], Converter]) -> None:
    # `_handler_for` only hands a factory the instances of the class it was registered for (or of a
    # subclass), so a factory typed for that class is safe to store among the general ones.
    _HANDLERS[field_class] = cast(HandlerFactory, factory)


def register_by_to_internal_value(*field_classes: type[fields.Field]) -> None:
    """Compile these classes by calling their own `to_internal_value`.

    For classes whose only change to Field's validation is a pure `to_internal_value`: calling it
    is exactly what DRF does, so the class's rules are not restated here and cannot drift.
    """
    for field_class in field_classes:
        for klass in field_class.__mro__:
            if klass is fields.Field:
                break
            overridden = (FIELD_BEHAVIOUR - {"to_internal_value"}) & set(vars(klass))
            if overridden:
                raise NotCompilable(f"{klass.__name__} overrides {sorted(overridden)}")
        register(field_class, _by_to_internal_value)


def _handler_for(field: fields.Field) -> HandlerFactory:
    for klass in type(field).__mro__:
        factory = _HANDLERS.get(klass)
        if factory is not None:
            return factory
        overridden = FIELD_BEHAVIOUR & set(vars(klass))
        if overridden:
            raise NotCompilable(f"{klass.__name__} overrides {sorted(overridden)} and is not registered")
    raise NotCompilable(f"no handler for {type(field).__name__}")


# --- Field-level validators --------------------------------------------------------------------


def _compile_check(validator: Any) -> Check:
    kind = type(validator)
    # BaseValidator.limit_value is typed Any (a value or a callable); None for other validators.
    limit: Any = getattr(validator, "limit_value", None)
    if kind in (django_validators.MaxLengthValidator, django_validators.MinLengthValidator) and not callable(limit):
        if kind is django_validators.MaxLengthValidator:

            def check(value: Any) -> None:
                if len(value) > limit:
                    raise Decline
        else:

            def check(value: Any) -> None:
                if len(value) < limit:
                    raise Decline

        return check
    if kind in (django_validators.MaxValueValidator, django_validators.MinValueValidator) and not callable(limit):
        if kind is django_validators.MaxValueValidator:

            def check(value: Any) -> None:
                if value > limit:
                    raise Decline
        else:

            def check(value: Any) -> None:
                if value < limit:
                    raise Decline

        return check
    if getattr(validator, "requires_context", False) or not callable(validator):
        raise NotCompilable(f"validator {validator!r} needs the field")
    # Any other validator (e.g. envelope._printable) is called as DRF calls it: its error, if
    # any, declines. CharField inlines its NUL and surrogate validators in _char.
    return validator


def _checks(field: fields.Field) -> tuple[Check, ...]:
    return tuple(_compile_check(validator) for validator in field.validators)


def _run_checks(converter: Converter, checks: tuple[Check, ...]) -> Converter:
    if not checks:
        return converter
    if len(checks) == 1:
        (only,) = checks

        def checked_one(value: Any) -> Any:
            value = converter(value)
            only(value)
            return value

        return checked_one

    def checked(value: Any) -> Any:
        value = converter(value)
        for check in checks:
            check(value)
        return value

    return checked


# --- Handlers: a present, non-null value to its internal value ---------------------------------


def _by_to_internal_value(field: fields.Field, checks: tuple[Check, ...]) -> Converter:
    return _run_checks(field.to_internal_value, checks)


def _char(field: fields.CharField, checks: tuple[Check, ...]) -> Converter:
    # CharField.run_validation: a blank value returns '' before the validators run. The length,
    # NUL and surrogate validators every CharField carries are done here without a call each.
    allow_blank: bool = field.allow_blank
    trim: bool = field.trim_whitespace
    max_length: int | None = None
    min_length: int | None = None
    no_nul = no_surrogates = False
    others: list[Check] = []
    for validator in field.validators:
        kind = type(validator)
        limit = getattr(validator, "limit_value", None)
        if kind is django_validators.MaxLengthValidator and max_length is None and type(limit) is int:
            max_length = limit
        elif kind is django_validators.MinLengthValidator and min_length is None and type(limit) is int:
            min_length = limit
        elif kind is django_validators.ProhibitNullCharactersValidator:
            no_nul = True
        elif kind is ProhibitSurrogateCharactersValidator:
            no_surrogates = True
        else:
            others.append(_compile_check(validator))
    rest = tuple(others)

    def convert(value: Any) -> Any:
        kind = type(value)
        if kind is str:
            if trim:
                value = value.strip()
            if not value:
                if allow_blank:
                    return ""
                raise Decline
        elif kind is int or kind is float:
            # DRF's leniency: a JSON number becomes its str().
            value = str(value)
        else:
            raise Decline
        if (
            (max_length is not None and len(value) > max_length)
            or (min_length is not None and len(value) < min_length)
            or (no_nul and "\x00" in value)
            or (no_surrogates and not value.isascii() and _SURROGATE.search(value))
        ):
            raise Decline
        for check in rest:
            check(value)
        return value

    return convert


def _choice(field: fields.ChoiceField, checks: tuple[Check, ...]) -> Converter:
    # The same str -> declared value map DRF looks up, so a TextChoices member comes back as such.
    choices: dict[str, Any] = dict(field.choice_strings_to_values)
    allow_blank: bool = field.allow_blank

    def convert(value: Any) -> Any:
        kind = type(value)
        if kind is str:
            if allow_blank and value == "":
                return ""
            result = choices.get(value, _MISSING)
        elif kind is int or kind is float or kind is bool:
            result = choices.get(str(value), _MISSING)
        else:
            raise Decline
        if result is _MISSING:
            raise Decline
        return result

    return _run_checks(convert, checks)


def _uuid(field: fields.Field, checks: tuple[Check, ...]) -> Converter:
    # `format` only shapes the output; every input form uuid.UUID(hex=...) takes is accepted.
    def convert(value: Any) -> Any:
        kind = type(value)
        if kind is str:
            return uuid.UUID(hex=value)
        if kind is uuid.UUID:
            return value
        raise Decline

    return _run_checks(convert, checks)


def _integer(field: fields.Field, checks: tuple[Check, ...]) -> Converter:
    # Only a JSON integer; DRF's string and float coercions are left to DRF.
    def convert(value: Any) -> Any:
        if type(value) is not int or value.bit_length() > _SAFE_INT_BITS:
            raise Decline
        return value

    return _run_checks(convert, checks)


def _boolean(field: fields.Field, checks: tuple[Check, ...]) -> Converter:
    def convert(value: Any) -> Any:
        if type(value) is not bool:
            raise Decline
        return value

    return _run_checks(convert, checks)


def utc_datetime(field: fields.Field, checks: tuple[Check, ...]) -> Converter:
    """For a DateTimeField subclass whose to_internal_value is DRF's followed by .astimezone(UTC).

    DRF parses ISO-8601 with django.utils.dateparse.parse_datetime, then moves an aware value to
    the current timezone; the UTC conversion after it makes that timezone irrelevant. A naive
    value depends on the current timezone and is left to DRF, as are the first and last years,
    where a conversion may overflow.
    """
    formats = getattr(field, "input_formats", api_settings.DATETIME_INPUT_FORMATS)
    if [str(form).lower() for form in formats] != [ISO_8601] or hasattr(field, "timezone"):
        return _by_to_internal_value(field, checks)

    def convert(value: Any) -> Any:
        if type(value) is not str or not settings.USE_TZ:
            raise Decline
        parsed = parse_datetime(value)
        if parsed is None or parsed.utcoffset() is None or not 1 < parsed.year < 9999:
            raise Decline
        return parsed.astimezone(UTC)

    return _run_checks(convert, checks)


def _unvalidated(field: fields.Field, checks: tuple[Check, ...]) -> Converter:
    return _run_checks(lambda value: value, checks)


def _list(field: fields.ListField, checks: tuple[Check, ...]) -> Converter:
    child = compile_field(field.child)
    allow_empty: bool = field.allow_empty

    def convert(value: Any) -> Any:
        if type(value) is not list or (not allow_empty and not value):
            raise Decline
        result = [child(item) for item in value]
        for check in checks:
            check(result)
        return result

    return convert


def _dict(field: fields.DictField, checks: tuple[Check, ...]) -> Converter:
    child = compile_field(field.child)
    allow_empty: bool = field.allow_empty
    unvalidated = type(field.child) is fields._UnvalidatedField and not field.child.validators

    def convert(value: Any) -> Any:
        if type(value) is not dict or (not allow_empty and not value):
            raise Decline
        if unvalidated:
            result = {str(key): item for key, item in value.items()}
        else:
            result = {str(key): child(item) for key, item in value.items()}
        for check in checks:
            check(result)
        return result

    return convert


def _nested(field: serializers.Serializer, checks: tuple[Check, ...]) -> Converter:
    if checks:
        raise NotCompilable(f"{type(field).__name__} has serializer-level validators")
    return compile_serializer_instance(field)


register(fields.CharField, _char)
register(fields.ChoiceField, _choice)
register(fields.UUIDField, _uuid)
register(fields.IntegerField, _integer)
register(fields.BooleanField, _boolean)
register(fields._UnvalidatedField, _unvalidated)
register(fields.ListField, _list)
register(fields.DictField, _dict)
register(serializers.Serializer, _nested)
register_by_to_internal_value(fields.DateTimeField, fields.DateField, fields.TimeField)


# --- Compiling fields and serializers ----------------------------------------------------------


def compile_field(field: fields.Field) -> Converter:
    """A present value (possibly null) of `field` to its internal value, or raise."""
    if field.source == "*":
        raise NotCompilable(f"{field.field_name}: source='*'")
    converter = _handler_for(field)(field, _checks(field))
    allow_null: bool = field.allow_null

    def convert(value: Any) -> Any:
        if value is None:
            if allow_null:
                return None
            raise Decline
        return converter(value)

    return convert


_REQUIRED, _SKIP, _CALL, _VALUE = range(4)


def _when_missing(field: fields.Field) -> tuple[int, Any]:
    if field.required:
        return _REQUIRED, None
    default = field.default
    if default is fields.empty:
        return _SKIP, None
    if callable(default):
        if getattr(default, "requires_context", False):
            raise NotCompilable(f"{field.field_name}: default needs the field")
        return _CALL, default
    return _VALUE, default


def compile_serializer_instance(serializer: serializers.Serializer) -> Converter:
    """A validator for data bound to this (bound or root) serializer instance."""
    for klass in type(serializer).__mro__:
        if klass is serializers.Serializer:
            break
        overridden = SERIALIZER_BEHAVIOUR & set(vars(klass))
        if overridden:
            raise NotCompilable(f"{klass.__name__} overrides {sorted(overridden)}")
    else:
        raise NotCompilable(f"{type(serializer).__name__} is not a Serializer")
    if serializer.validators:
        raise NotCompilable(f"{type(serializer).__name__} has serializer-level validators")

    plan: list[tuple[str, Converter, int, Any, Callable[[Any], Any] | None]] = []
    for name, field in serializer.fields.items():
        if field.read_only:
            raise NotCompilable(f"{type(serializer).__name__}.{name} is read-only")
        if field.source_attrs != [name]:
            raise NotCompilable(f"{type(serializer).__name__}.{name} has source={field.source!r}")
        try:
            converter = compile_field(field)
        except NotCompilable as exc:
            raise NotCompilable(f"{type(serializer).__name__}.{name}: {exc}") from exc
        missing, default = _when_missing(field)
        plan.append((name, converter, missing, default, getattr(serializer, f"validate_{name}", None)))
    steps = tuple(plan)
    validate = serializer.validate if type(serializer).validate is not serializers.Serializer.validate else None

    def run(data: Any) -> Any:
        if type(data) is not dict:
            raise Decline
        result: dict[str, Any] = {}
        get = data.get
        for name, converter, missing, default, validate_field in steps:
            value = get(name, _MISSING)
            if value is _MISSING:
                if missing == _SKIP:
                    continue
                if missing == _REQUIRED:
                    raise Decline
                value = default() if missing == _CALL else default
            else:
                value = converter(value)
            if validate_field is not None:
                value = validate_field(value)
            result[name] = value
        if validate is not None:
            result = validate(result)
            if result is None:
                raise Decline
        return result

    return run


def compile_serializer(serializer_class: type[serializers.Serializer]) -> Converter:
    """A validator for `serializer_class`, or NotCompilable.

    Its `validate_<field>` and `validate` methods are those of one instance made here: they are
    called as DRF calls them, so they must not depend on per-request state of the instance.
    """
    if not rest_framework.__version__.startswith(DRF_SERIES + "."):
        raise NotCompilable(f"written for DRF {DRF_SERIES}, running {rest_framework.__version__}")
    if 0 < sys.get_int_max_str_digits() < _SAFE_INT_DIGITS:
        raise NotCompilable("sys.get_int_max_str_digits() is lower than the integer handler assumes")
    return compile_serializer_instance(serializer_class())
