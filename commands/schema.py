"""The envelope of PROTOCOL.md §4 and every command it carries: one pydantic model per message.

These models validate every body the intake takes (`commands.validation` runs them), give every
field error, and are what the OpenAPI document is generated from (`commands.schema_docs`). Unknown
keys are ignored (forward compatibility); missing or mistyped ones become one `errors` entry
each. Timestamps with an offset are converted to UTC. The policy snapshot's payload is
`policies.schema.PolicyPayload`.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    MISSING,
    Field,
    PlainValidator,
    RootModel,
    StrictBool,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from bridgeproject.schema import AnyUuid, Number, OneOf, RequestModel, Text, UtcTimestamp, field_rule
from commands.models import CommandType, Priority
from policies.schema import MAX_VOLUME, PolicyPayload

MAX_PRICE = Decimal("100000000")
BIG_INT_MAX = 2**63 - 1

Volume = Number(ge=Decimal("0.01"), le=MAX_VOLUME)
Price = Number(ge=Decimal(0), le=MAX_PRICE)
Ticket = Annotated[int, Field(strict=True, ge=1, le=BIG_INT_MAX)]
Symbol = Annotated[str, Text(max_length=32)]
UtcDateTime = Annotated[datetime, UtcTimestamp()]

# PROTOCOL §9 "Command ids": 1–64 characters a URL path segment carries as they are, so every
# accepted command reads back at GET /mt5/commands/{command_id}; "." and ".." are path steps.
COMMAND_ID_PATTERN = r"^(?!\.+$)[A-Za-z0-9._:-]{1,64}$"
COMMAND_ID_RULE = "1–64 characters of A–Z, a–z, 0–9, '.', '_', ':' and '-' (not dots alone)."
_COMMAND_ID = re.compile(r"(?!\.+\Z)[A-Za-z0-9._:-]{1,64}\Z")


def _command_id(value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)  # a text field takes a JSON number as its text
    if not isinstance(value, str):
        raise PydanticCustomError("string_type", "Not a valid string.")
    if not value:
        raise PydanticCustomError("string_too_short", "This field may not be blank.")
    if not _COMMAND_ID.match(value):
        raise PydanticCustomError("command_id", COMMAND_ID_RULE)
    return value


CommandId = Annotated[
    str,
    PlainValidator(_command_id),
    WithJsonSchema({"type": "string", "pattern": COMMAND_ID_PATTERN, "description": COMMAND_ID_RULE}),
]


# --- Envelope parts -------------------------------------------------------------------------


class Meta(RequestModel):
    protocol_version: Annotated[str, Text(max_length=16)]
    request_id: Annotated[uuid.UUID, AnyUuid()]
    correlation_id: Annotated[str, Text(max_length=128)]
    idempotency_key: Annotated[str, Text()] | MISSING = MISSING
    tenant_id: Annotated[str, Text(max_length=64)]
    environment: Annotated[str, Text(max_length=32)]
    source: Annotated[str, Text(max_length=32)]
    sent_at_utc: UtcDateTime

    @field_validator("protocol_version")
    @classmethod
    def _version_1(cls, value: str) -> str:
        major, _, minor = value.partition(".")
        if major != "1" or (minor and not minor.isdigit()):
            raise PydanticCustomError("protocol_version", "Must be 1.x.")
        return value


class Actor(RequestModel):
    trading_account_id: Annotated[str, Text(max_length=64)]
    account_login: Annotated[int, Field(strict=True, ge=1, le=BIG_INT_MAX)]
    server: Annotated[str, Text(max_length=128)]
    platform: Annotated[str, OneOf(["MT5"])]


class Context(RequestModel):
    session_id: Annotated[str, Text(max_length=128)]
    terminal_id: Annotated[str, Text(max_length=128, blank=True)] | MISSING = MISSING
    correlation_group: Annotated[str, Text(max_length=128)]


class RequestKind(RequestModel):
    type: Annotated[str, OneOf(["command", "policy_snapshot"])]
    version: Annotated[str, OneOf(["1"])]


class Envelope(RequestModel):
    """Any inbound envelope; its payload is validated by the model its request.type names."""

    meta: Meta
    actor: Actor
    context: Context
    request: RequestKind
    payload: dict[str, Any]


# --- Command payloads (PROTOCOL.md §5) --------------------------------------------------------


class CommandCommon(RequestModel):
    """The fields every command carries."""

    command_id: CommandId
    command_type: Annotated[str, OneOf(CommandType.values)]
    priority: Annotated[str, OneOf(Priority.values)] = Priority.NORMAL.value
    fast_lane: StrictBool = False
    reason: Annotated[str, Text(blank=True)] = ""
    expires_at_utc: UtcDateTime | None = None


class OpenPositionPayload(CommandCommon):
    """Payload of an `open_position` command."""

    command_type: Literal["open_position"]
    symbol: Symbol
    direction: Annotated[str, OneOf(["buy", "sell"])]
    volume: Annotated[Decimal, Volume]
    open_price: Annotated[Decimal, Price] | MISSING | None = MISSING
    stop_loss: Annotated[Decimal, Price] | MISSING | None = MISSING
    take_profit: Annotated[Decimal, Price] | MISSING | None = MISSING
    comment: Annotated[str, Text(max_length=64, blank=True)] | MISSING = MISSING
    max_slippage_points: Annotated[int, Field(strict=True, ge=0, le=100_000)] | MISSING = MISSING


class ClosePositionPayload(CommandCommon):
    """Payload of a `close_position` command."""

    command_type: Literal["close_position"]
    ticket: Ticket
    volume: Annotated[Decimal, Volume] | MISSING | None = MISSING


class Target(RequestModel):
    mode: Annotated[str, OneOf(["all_positions", "by_symbol", "by_tickets", "losing", "profitable"])]
    symbols: Annotated[list[Symbol], Field(max_length=100)] | MISSING = MISSING
    tickets: Annotated[list[Ticket], Field(max_length=1000)] | MISSING = MISSING

    @model_validator(mode="after")
    def _listed(self) -> Target:
        # A list left out is MISSING (a sentinel, not an empty list).
        if self.mode == "by_symbol" and (self.symbols is MISSING or not self.symbols):
            raise field_rule("symbols", "Required when mode is by_symbol.")
        if self.mode == "by_tickets" and (self.tickets is MISSING or not self.tickets):
            raise field_rule("tickets", "Required when mode is by_tickets.")
        return self


class ExecutionFlags(RequestModel):
    allow_partial_close: StrictBool = False
    close_only_profitable: StrictBool = False
    force_market: StrictBool = True


class ClosePositionsPayload(CommandCommon):
    """Payload of a `close_positions` command."""

    command_type: Literal["close_positions"]
    target: Target
    execution: ExecutionFlags | MISSING = MISSING


class ModifyPositionPayload(CommandCommon):
    """Payload of a `modify_position` command."""

    command_type: Literal["modify_position"]
    ticket: Ticket
    stop_loss: Annotated[Decimal, Price] | MISSING | None = MISSING
    take_profit: Annotated[Decimal, Price] | MISSING | None = MISSING

    @model_validator(mode="after")
    def _something_to_modify(self) -> ModifyPositionPayload:
        if "stop_loss" not in self.model_fields_set and "take_profit" not in self.model_fields_set:
            raise field_rule("stop_loss", "Give stop_loss, take_profit or both.")
        return self


class CancelOrdersPayload(CommandCommon):
    """Payload of a `cancel_orders` command."""

    command_type: Literal["cancel_orders"]
    tickets: Annotated[list[Ticket], Field(max_length=1000)] | MISSING = MISSING


class DisableTradingPayload(CommandCommon):
    """Payload of a `disable_trading` command."""

    command_type: Literal["disable_trading"]


class EnableTradingPayload(CommandCommon):
    """Payload of an `enable_trading` command."""

    command_type: Literal["enable_trading"]


class SyncAccountPayload(CommandCommon):
    """Payload of a `sync_account` command."""

    command_type: Literal["sync_account"]


PAYLOAD_MODELS: dict[str, type[CommandCommon]] = {
    CommandType.OPEN_POSITION: OpenPositionPayload,
    CommandType.CLOSE_POSITION: ClosePositionPayload,
    CommandType.CLOSE_POSITIONS: ClosePositionsPayload,
    CommandType.MODIFY_POSITION: ModifyPositionPayload,
    CommandType.CANCEL_ORDERS: CancelOrdersPayload,
    CommandType.DISABLE_TRADING: DisableTradingPayload,
    CommandType.ENABLE_TRADING: EnableTradingPayload,
    CommandType.SYNC_ACCOUNT: SyncAccountPayload,
}
COMMON_FIELDS = frozenset(CommandCommon.model_fields)

AnyCommandPayload = Annotated[
    OpenPositionPayload
    | ClosePositionPayload
    | ClosePositionsPayload
    | ModifyPositionPayload
    | CancelOrdersPayload
    | DisableTradingPayload
    | EnableTradingPayload
    | SyncAccountPayload,
    Field(discriminator="command_type"),
]


class CommandPayload(RootModel[AnyCommandPayload]):
    """A command's payload: the common fields and those of its `command_type` (the discriminator,
    whose values are the command types)."""


class LegacyFlatCommand(RequestModel):
    """The flat body of the panel's PowerShell quick test."""

    command_id: CommandId
    tenant_id: Annotated[str, Text(max_length=64)]
    account_id: Annotated[int, Field(strict=True, ge=1, le=BIG_INT_MAX)]
    command_type: Annotated[str, OneOf(CommandType.values)]
    payload: dict[str, Any] = Field(default_factory=dict)
    issued_at: UtcDateTime | MISSING | None = MISSING


# --- The documented envelopes: the same parts, with the payload each request type carries -------


class CommandRequestDoc(RequestKind):
    type: Annotated[str, OneOf(["command"])]


class PolicyRequestDoc(RequestKind):
    type: Annotated[str, OneOf(["policy_snapshot"])]


class CommandEnvelopeDoc(Envelope):
    """A command envelope (PROTOCOL.md §4–5)."""

    request: CommandRequestDoc
    payload: CommandPayload  # type: ignore[assignment]  # the envelope's dict, as the model its type names


class PolicyEnvelopeDoc(Envelope):
    """A policy snapshot envelope (RISK_RULES.md gives every field's meaning)."""

    request: PolicyRequestDoc
    payload: PolicyPayload  # type: ignore[assignment]  # the envelope's dict, as the model its type names
