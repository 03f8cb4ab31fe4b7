"""The compiled fast path of commands.envelope against DRF: same results where it accepts, DRF's errors elsewhere."""

from __future__ import annotations

import copy
import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_framework import fields, serializers

from commands import envelope, examples, fastvalidate, validation
from commands.envelope import (
    PAYLOAD_SERIALIZERS,
    CommandCommonSerializer,
    EnvelopeSerializer,
    LegacyFlatCommandSerializer,
    NumberField,
    PolicyPayloadSerializer,
    Text,
)
from panel import payloads as panel_payloads

HYPOTHESIS = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- Comparing outcomes ------------------------------------------------------------------------


def same(left: Any, right: Any) -> bool:
    """Equal and of the same types all the way down (Decimal exponent and tzinfo included)."""
    if type(left) is not type(right):
        return False
    if isinstance(left, dict):
        return list(left) == list(right) and all(same(left[key], right[key]) for key in left)
    if isinstance(left, list):
        return len(left) == len(right) and all(same(a, b) for a, b in zip(left, right, strict=True))
    if isinstance(left, Decimal):
        return left.as_tuple() == right.as_tuple()
    if isinstance(left, dt.datetime):
        return left == right and left.tzinfo == right.tzinfo and left.utcoffset() == right.utcoffset()
    return left == right


def outcome(call: Any, *args: Any) -> tuple[str, Any]:
    try:
        return "ok", call(*args)
    except serializers.ValidationError as exc:
        return "error", (exc.detail, exc.get_codes())
    except Exception as exc:
        # Should DRF itself raise on some input, the public functions must raise the same.
        return "raised", (type(exc), str(exc))


def same_outcome(left: tuple[str, Any], right: tuple[str, Any]) -> bool:
    if left[0] != right[0]:
        return False
    if left[0] != "ok":
        return left[1] == right[1]
    return same(left[1], right[1])


def agrees(serializer_class: type[serializers.Serializer], data: Any, prefix: str = "") -> bool:
    """Check one body; True when the fast path accepted it."""
    drf = outcome(validation.drf_validate_with, serializer_class, copy.deepcopy(data), prefix)
    fast = validation.fast_validate(serializer_class, copy.deepcopy(data))
    if fast is not None:
        assert drf[0] == "ok", f"the fast path accepted what DRF rejects: {drf[1]}"
        assert same(fast, drf[1]), (fast, drf[1])
    public = outcome(validation.validate_with, serializer_class, copy.deepcopy(data), prefix)
    assert same_outcome(public, drf), (public, drf)
    return fast is not None


def command_agrees(payload: Any) -> bool:
    drf = outcome(validation.drf_validate_command_payload, copy.deepcopy(payload))
    fast = validation.fast_validate_command_payload(copy.deepcopy(payload))
    if fast is not None:
        assert drf[0] == "ok", f"the fast path accepted what DRF rejects: {drf[1]}"
        assert same(list(fast), list(drf[1])), (fast, drf[1])
    public = outcome(validation.validate_command_payload, copy.deepcopy(payload))
    if public[0] == "ok":
        public = ("ok", list(public[1]))
    assert same_outcome(public, ("ok", list(drf[1])) if drf[0] == "ok" else drf), (public, drf)
    return fast is not None


# --- Examples ----------------------------------------------------------------------------------


def _flat_command(body: dict[str, Any]) -> dict[str, Any]:
    return {**body["payload"], "command_id": body["command_id"], "command_type": body["command_type"]}


def _sample_commands() -> list[dict[str, Any]]:
    return [
        {**copy.deepcopy(fields_), "command_id": f"cmd-{command_type}", "command_type": command_type}
        for command_type, fields_ in panel_payloads.SAMPLE_COMMAND_FIELDS.items()
    ]


def test_the_fast_path_accepts_every_example_envelope_and_agrees_with_drf() -> None:
    assert agrees(EnvelopeSerializer, examples.example("close_positions"))
    assert agrees(EnvelopeSerializer, examples.example("policy_snapshot"))
    # An outbound report's request.type is not one the inbound envelope takes.
    assert not agrees(EnvelopeSerializer, examples.example("protective_action_report"))


def test_the_fast_path_accepts_every_example_payload_and_agrees_with_drf() -> None:
    assert command_agrees(examples.example("close_positions")["payload"])
    legacy = examples.example("legacy_open_position")
    assert agrees(LegacyFlatCommandSerializer, legacy)
    assert command_agrees(_flat_command(legacy))
    assert agrees(PolicyPayloadSerializer, examples.example("policy_snapshot")["payload"], "payload")
    assert agrees(PolicyPayloadSerializer, panel_payloads.SAMPLE_POLICY_FIELDS, "payload")
    for command in _sample_commands():
        assert command_agrees(command), command["command_type"]


@pytest.mark.parametrize("command_type", sorted(panel_payloads.SAMPLE_COMMAND_FIELDS))
def test_the_fast_path_accepts_what_the_panel_builder_builds(command_type: str) -> None:
    built = panel_payloads.build_request(
        request_type=panel_payloads.COMMAND,
        tenant_id="tenant_1",
        account=panel_payloads.SAMPLE_ACCOUNT,
        command_type=command_type,
        fields=panel_payloads.sample_fields(panel_payloads.COMMAND, command_type),
    )
    assert built.valid, built.errors
    assert agrees(EnvelopeSerializer, built.body)
    assert command_agrees(built.body["payload"])


def test_the_fast_path_fills_in_defaults_with_drfs_types() -> None:
    legacy = examples.example("legacy_open_position")
    common, specific = validation.validate_command_payload(_flat_command(legacy))
    assert type(common["priority"]) is type(CommandCommonSerializer().fields["priority"].default)
    assert common["fast_lane"] is False and common["reason"] == "" and common["expires_at_utc"] is None
    assert specific["volume"] == Decimal("0.1") and type(specific["volume"]) is Decimal
    assert "max_slippage_points" not in specific
    assert not agrees(LegacyFlatCommandSerializer, {**legacy, "payload": None})
    without_payload = {key: value for key, value in legacy.items() if key != "payload"}
    first = validation.fast_validate(LegacyFlatCommandSerializer, without_payload)
    second = validation.fast_validate(LegacyFlatCommandSerializer, without_payload)
    assert first is not None and second is not None
    assert first["payload"] == {} and first["payload"] is not second["payload"]


def test_the_fast_path_agrees_with_drf_on_timestamps_under_another_current_timezone() -> None:
    body = examples.example("close_positions")
    for stamp in ("2026-05-29T14:00:00+02:00", "2026-05-29T12:00:00", "2026-03-29T02:30:00", "2026-05-29T12:00:00Z"):
        body["meta"]["sent_at_utc"] = stamp
        with timezone.override("Europe/Berlin"):
            agrees(EnvelopeSerializer, body)
        agrees(EnvelopeSerializer, body)


def test_the_fast_path_runs_the_serializers_own_validate_methods() -> None:
    body = examples.example("close_positions")
    body["meta"]["protocol_version"] = "2.0"
    assert not agrees(EnvelopeSerializer, body)
    payload = examples.example("close_positions")["payload"]
    payload["target"] = {"mode": "by_symbol"}
    assert not command_agrees(payload)
    payload["target"] = {"mode": "by_symbol", "symbols": ["EURUSD"]}
    assert command_agrees(payload)
    assert not command_agrees({"command_id": "c", "command_type": "modify_position", "ticket": 5})


# --- What the compiler refuses -----------------------------------------------------------------


class _Opaque(serializers.Field):
    def to_internal_value(self, data: Any) -> Any:
        return data


class _Shouting(Text):
    def to_internal_value(self, data: Any) -> str:
        return super().to_internal_value(data).upper()


class _WithUnknownField(serializers.Serializer):
    name = Text()
    opaque = _Opaque()


class _WithUnknownNestedField(serializers.Serializer):
    name = Text()
    inner = _WithUnknownField()


class _WithOverridingSubclass(serializers.Serializer):
    name = _Shouting()


class _WithLibraryFieldNotRegistered(serializers.Serializer):
    ratio = serializers.FloatField()


class _WithObjectValidator(serializers.Serializer):
    name = Text()

    class Meta:
        validators = [lambda attrs: None]


@pytest.mark.parametrize(
    "serializer_class",
    [
        _WithUnknownField,
        _WithUnknownNestedField,
        _WithOverridingSubclass,
        _WithLibraryFieldNotRegistered,
        _WithObjectValidator,
    ],
)
def test_a_serializer_with_an_unknown_field_type_is_not_compiled(
    serializer_class: type[serializers.Serializer],
) -> None:
    with pytest.raises(fastvalidate.NotCompilable):
        fastvalidate.compile_serializer(serializer_class)
    assert validation.fast_validator(serializer_class) is None
    # The public function still validates it, through DRF alone.
    data = {"name": "n", "opaque": 1, "inner": {"name": "m", "opaque": 2}, "ratio": 0.5}
    assert validation.validate_with(serializer_class, data, "") == validation.drf_validate_with(
        serializer_class, data, ""
    )
    with pytest.raises(serializers.ValidationError):
        validation.validate_with(serializer_class, {}, "")


def test_a_field_added_to_a_serializer_is_compiled_from_its_declaration() -> None:
    class Extended(envelope.ClosePositionSerializer):
        note = Text(max_length=3, required=False)
        when = serializers.DateField(required=False)

    assert validation.fast_validator(Extended) is not None
    assert agrees(Extended, {"ticket": 1, "note": "abc", "when": "2026-05-29"})
    assert not agrees(Extended, {"ticket": 1, "note": "abcd"})
    assert not agrees(Extended, {"ticket": 1, "when": "2026-02-30"})


def test_every_serializer_the_intake_uses_is_compiled() -> None:
    for serializer_class in (
        EnvelopeSerializer,
        LegacyFlatCommandSerializer,
        CommandCommonSerializer,
        PolicyPayloadSerializer,
        *PAYLOAD_SERIALIZERS.values(),
    ):
        assert validation.fast_validator(serializer_class) is not None, serializer_class.__name__


# --- Generated bodies --------------------------------------------------------------------------

_UUID = "1a2b3c4d-1111-2222-3333-444444444444"
ANYTHING = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)
STRINGS = [
    "", " ", "a", " padded ", "a\tb", "a\nb", "\x00", "\x7f", "é", "\ud800", "\u200b", "1.0", "42", "x" * 300,
]  # fmt: skip
TIMESTAMPS = [
    "2026-05-29T12:00:00Z", "2026-05-29T12:00:00+00:00", "2026-05-29T14:00:00+02:00", "2026-05-29T07:30:00-04:30",
    "2026-05-29T12:00:00.123456Z", "2026-05-29T12:00:00,5Z", "2026-05-29T12:00Z", "2026-05-29 12:00:00Z",
    "2026-05-29T12:00:00", "2026-05-29", "20260529T120000Z", "2026-13-01T00:00:00Z", "2026-02-30T00:00:00Z",
    "2026-05-29T25:00:00Z", "0001-01-01T00:30:00+01:00", "9999-12-31T23:59:59-01:00", "2026-05-29T12:00:00+24:00",
    "iso-8601", "yesterday", 1780056000, 1780056000.5,
]  # fmt: skip
DATES = [
    "2026-05-29",
    "2026-5-29",
    "2026-02-29",
    "2028-02-29",
    "2026-05-29T00:00:00",
    "20260529",
    "29/05/2026",
    20260529,
]
TIMES = ["00:00", "23:59", "24:00", "12:00:00", "12:00:00.5", "1:05", "12", "12:00Z", 1200]
UUIDS = [
    _UUID, _UUID.upper(), _UUID.replace("-", ""), "{" + _UUID + "}", "urn:uuid:" + _UUID, _UUID[:-1], _UUID + "0",
    "1a2b3c4d-1111-2222-3333-44444444444g", 5, 2**128,
]  # fmt: skip


def _number_values(field: NumberField) -> list[Any]:
    values: list[Any] = [0, 1, -1, 0.5, 1e-8, 1.5e-9, 0.123456789, 1.005, 10**30, 1e300, -0.0]
    values += [float("nan"), float("inf"), "1", "1.5", True, False]
    places = Decimal(1).scaleb(-field.decimal_places)
    for bound in (field.min_value, field.max_value):
        if bound is None:
            continue
        for value in (bound, bound - 1, bound + 1, bound - places, bound + places, bound + places / 10):
            values += [int(value)] if value == int(value) else []
            values.append(float(value))
    return values


def _integer_values(field: fields.IntegerField) -> list[Any]:
    values: list[Any] = [0, 1, -1, 1.0, 1.5, "1", "1.0", True, False, 2**63, 2**64, 10**5000]
    for bound in (field.min_value, field.max_value):
        if bound is not None:
            values += [bound, bound - 1, bound + 1]
    return values


def _choice_values(field: fields.ChoiceField) -> list[Any]:
    values: list[Any] = ["", "MT5 ", 1, 1.0, True]
    for choice in field.choices:
        values += [choice, str(choice).upper(), f" {choice}", str(choice)[:-1]]
    return values


def candidates(field: fields.Field) -> list[Any]:
    """Near misses (and some valid values) for one scalar field, derived from its declaration."""
    values: list[Any] = [None]
    if isinstance(field, serializers.Serializer | fields.ListField):
        values += [[], "x", {}, ()]
    elif isinstance(field, fields.DictField):
        values += [{}, {"a": 1}, [], "x"]
    elif isinstance(field, NumberField):
        values += _number_values(field)
    elif isinstance(field, fields.IntegerField):
        values += _integer_values(field)
    elif isinstance(field, fields.BooleanField):
        values += [True, False, 1, 0, "true", "false"]
    elif isinstance(field, fields.ChoiceField):
        values += _choice_values(field)
    elif isinstance(field, fields.DateTimeField):
        values += TIMESTAMPS
    elif isinstance(field, fields.DateField):
        values += DATES
    elif isinstance(field, fields.TimeField):
        values += TIMES
    elif isinstance(field, fields.UUIDField):
        values += UUIDS
    elif isinstance(field, fields.CharField):
        values += [*STRINGS, 42, 4.5, True, "1", "1.", "1.x", "01", "2.0"]
        if field.max_length:
            values += ["y" * field.max_length, "y" * (field.max_length + 1), " " * field.max_length + " "]
    return values


def _valid_item(child: fields.Field) -> Any:
    for value in candidates(child):
        try:
            child.run_validation(value)
        except serializers.ValidationError:
            continue
        return value
    raise AssertionError(f"no valid candidate for {child!r}")


def _list_candidates(field: fields.ListField) -> list[Any]:
    item = _valid_item(field.child)
    values = [[value] for value in candidates(field.child)] + [[item, item]]
    if field.max_length:
        values += [[item] * field.max_length, [item] * (field.max_length + 1)]
    return values


def field_values(field: fields.Field, base: Any) -> st.SearchStrategy[Any]:
    """Values for one field: near misses derived from its declaration, then anything at all."""
    options = [st.sampled_from(candidates(field)), ANYTHING]
    if isinstance(field, serializers.Serializer):
        options.insert(0, serializer_bodies(field, base if isinstance(base, dict) else {}))
    elif isinstance(field, fields.ListField):
        options.insert(0, st.sampled_from(_list_candidates(field)))
        options.insert(0, st.lists(field_values(field.child, None), max_size=3))
    return st.one_of(options)


def single_changes(serializer: serializers.Serializer, base: dict[str, Any]) -> list[dict[str, Any]]:
    """The valid base with one field dropped or given one candidate, for every field, recursively."""
    bodies: list[dict[str, Any]] = []
    for name, field in serializer.fields.items():
        bodies.append({key: value for key, value in base.items() if key != name})
        values = candidates(field)
        if isinstance(field, serializers.Serializer):
            values += single_changes(field, base.get(name) or {})
        elif isinstance(field, fields.ListField):
            values += _list_candidates(field)
        bodies += [{**copy.deepcopy(base), name: value} for value in values]
    return bodies


def _command_bases() -> list[dict[str, Any]]:
    return [*_sample_commands(), examples.example("close_positions")["payload"]]


def test_the_fast_path_agrees_with_drf_on_every_single_field_change() -> None:
    cases: list[tuple[type[serializers.Serializer], dict[str, Any], str]] = []
    for name in ("close_positions", "policy_snapshot"):
        cases += [(EnvelopeSerializer, body, "") for body in single_changes(_ENVELOPE, examples.example(name))]
    legacy = examples.example("legacy_open_position")
    cases += [(LegacyFlatCommandSerializer, body, "") for body in single_changes(LegacyFlatCommandSerializer(), legacy)]
    policy = examples.example("policy_snapshot")["payload"]
    cases += [(PolicyPayloadSerializer, body, "payload") for body in single_changes(PolicyPayloadSerializer(), policy)]
    accepted = 0
    for serializer_class, body, prefix in cases:
        accepted += agrees(serializer_class, body, prefix)
    for base in _command_bases():
        for serializer in (CommandCommonSerializer(), PAYLOAD_SERIALIZERS[base["command_type"]]()):
            for body in single_changes(serializer, base):
                accepted += command_agrees(body)
                cases.append((type(serializer), body, "payload"))
    assert accepted > len(cases) // 10, (accepted, len(cases))


@st.composite
def _mutated(draw: st.DrawFn, serializer: serializers.Serializer, base: dict[str, Any]) -> Any:
    # Few changes per body: with many, nearly every body is invalid twice over and a check the
    # fast path dropped would hide behind the others.
    body = copy.deepcopy(base)
    names = list(serializer.fields)
    count = draw(st.sampled_from([1, 1, 1, 2, 3]))
    for name in draw(st.lists(st.sampled_from(names), min_size=1, max_size=count, unique=True)) if names else []:
        if draw(st.integers(0, 6)) == 0:
            body.pop(name, None)
        else:
            body[name] = draw(field_values(serializer.fields[name], base.get(name)))
    if draw(st.integers(0, 3)) == 0:
        body[draw(st.sampled_from(["unknown", "extra_field", "metadata"]))] = draw(ANYTHING)
    return body


def serializer_bodies(serializer: serializers.Serializer, base: dict[str, Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.just(copy.deepcopy(base)), _mutated(serializer, base))


_ENVELOPE = EnvelopeSerializer()


@HYPOTHESIS
@given(
    st.one_of(
        serializer_bodies(_ENVELOPE, examples.example("close_positions")),
        serializer_bodies(_ENVELOPE, examples.example("policy_snapshot")),
        st.sampled_from([None, [], "x", 1]),
    )
)
def test_the_fast_path_agrees_with_drf_on_generated_envelopes(body: Any) -> None:
    agrees(EnvelopeSerializer, body)


@HYPOTHESIS
@given(serializer_bodies(LegacyFlatCommandSerializer(), examples.example("legacy_open_position")))
def test_the_fast_path_agrees_with_drf_on_generated_flat_commands(body: Any) -> None:
    agrees(LegacyFlatCommandSerializer, body)
    if isinstance(body.get("payload"), dict):
        command_agrees(
            {**body["payload"], "command_id": body.get("command_id"), "command_type": body.get("command_type")}
        )


def _command_bodies() -> st.SearchStrategy[Any]:
    strategies = []
    for base in _command_bases():
        common = CommandCommonSerializer()
        specific = PAYLOAD_SERIALIZERS[base["command_type"]]()
        strategies.append(
            serializer_bodies(common, base).flatmap(lambda body, specific=specific: serializer_bodies(specific, body))
        )
    return st.one_of(strategies)


@HYPOTHESIS
@given(_command_bodies())
def test_the_fast_path_agrees_with_drf_on_generated_command_payloads(payload: Any) -> None:
    command_agrees(payload)
    for serializer_class in (CommandCommonSerializer, *PAYLOAD_SERIALIZERS.values()):
        agrees(serializer_class, payload, "payload")


@HYPOTHESIS
@given(serializer_bodies(PolicyPayloadSerializer(), examples.example("policy_snapshot")["payload"]))
def test_the_fast_path_agrees_with_drf_on_generated_policy_payloads(payload: Any) -> None:
    agrees(PolicyPayloadSerializer, payload, "payload")


def test_the_fast_path_accepts_most_generated_bodies_drf_accepts() -> None:
    # The agreement tests alone would pass with a fast path that declined everything. Most
    # generated bodies are invalid, so the same 600 every run: a count of valid ones that depends
    # on the draw made this test fail now and then (17 valid of 250 once).
    counts = {"drf": 0, "fast": 0}

    @settings(HYPOTHESIS, max_examples=600, derandomize=True)
    @given(
        st.one_of(
            serializer_bodies(_ENVELOPE, examples.example("close_positions")).map(lambda b: (EnvelopeSerializer, b)),
            serializer_bodies(PolicyPayloadSerializer(), examples.example("policy_snapshot")["payload"]).map(
                lambda b: (PolicyPayloadSerializer, b)
            ),
        )
    )
    def count(case: tuple[type[serializers.Serializer], Any]) -> None:
        serializer_class, body = case
        if outcome(validation.drf_validate_with, serializer_class, copy.deepcopy(body), "")[0] == "ok":
            counts["drf"] += 1
            counts["fast"] += agrees(serializer_class, body)

    count()
    assert counts["drf"] >= 20, counts
    assert counts["fast"] >= 0.8 * counts["drf"], counts


def test_uuid_input_forms_and_numbers_match_drf_one_by_one() -> None:
    meta = examples.example("close_positions")["meta"]
    for form in UUIDS:
        agrees(envelope.MetaSerializer, {**meta, "request_id": form})
    assert agrees(envelope.MetaSerializer, {**meta, "request_id": "{" + _UUID + "}"})
    position = {"ticket": 1}
    for value in _number_values(envelope.ClosePositionSerializer().fields["volume"]):
        agrees(envelope.ClosePositionSerializer, {**position, "volume": value})


class _PlainDrfFields(serializers.Serializer):
    name = serializers.CharField(max_length=5)
    optional = serializers.CharField(required=False, allow_blank=True, allow_null=True)
    count = serializers.IntegerField(min_value=0, max_value=10, required=False)
    flag = serializers.BooleanField(required=False)
    level = serializers.ChoiceField(choices=[(1, "one"), (2, "two")], required=False)
    at = serializers.DateTimeField(required=False)
    tags = serializers.ListField(required=False, allow_empty=False)
    counts = serializers.DictField(child=serializers.IntegerField(), required=False, allow_empty=False)
    ids = serializers.ListField(child=serializers.UUIDField(), required=False, min_length=1)


@pytest.mark.parametrize("body", single_changes(_PlainDrfFields(), {"name": "ab"}))
def test_the_fast_path_agrees_with_drf_on_plain_drf_fields(body: dict[str, Any]) -> None:
    agrees(_PlainDrfFields, body)
    for trimmed in (" ab ", "   ", "\x00", "a\ud800", "a\u2028"):
        agrees(_PlainDrfFields, {**body, "name": trimmed})
