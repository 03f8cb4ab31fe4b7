"""Writes for commands: acceptance (row + timeline + enqueue in one transaction) and transitions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone
from django_q.brokers import Broker, get_broker
from django_q.tasks import async_task

from bridgeproject.errors import BridgeError
from bridgeproject.jsonutil import jsonable, utc_iso
from commands.lanes import CLUSTER_FOR_LANE, lane_for
from commands.models import Command, CommandEvent, Source
from commands.states import State
from policies.models import TradingAccount
from tenancy.models import Tenant

EXECUTE_TASK = "execution.tasks.execute_command"


_brokers: dict[str, Broker] = {}


def _broker(lane: str) -> Broker:
    """The lane's broker, built once per process (django-q2 builds one per call otherwise)."""
    broker = _brokers.get(lane)
    if broker is None:
        broker = _brokers[lane] = get_broker(CLUSTER_FOR_LANE[lane])
    return broker


def command_enqueue(*, command: Command) -> None:
    """Ring the lane's doorbell. With the ORM broker this row commits or rolls back with the caller."""
    async_task(
        EXECUTE_TASK,
        command.pk,
        broker=_broker(command.lane),
        cluster=CLUSTER_FOR_LANE[command.lane],
        task_name=f"{command.command_type}:{command.command_id}"[:100],
        group=command.lane,
    )


@transaction.atomic
def command_create(
    *,
    tenant: Tenant,
    account: TradingAccount,
    common: dict[str, Any],
    specific: dict[str, Any],
    envelope: dict[str, Any],
    correlation_id: str,
    idempotency_key: str,
    source: str = Source.API,
    received_at: datetime | None = None,
) -> Command:
    """Create a command, queue it on its lane, and enqueue its task — all or nothing."""
    now = received_at or timezone.now()
    lane = lane_for(
        priority=common["priority"], fast_lane=common["fast_lane"], raised_by_bridge=source == Source.BRIDGE
    )
    command = Command(
        tenant=tenant,
        account=account,
        command_id=common["command_id"],
        command_type=common["command_type"],
        priority=common["priority"],
        lane=lane,
        source=source,
        reason=common.get("reason") or "",
        payload=jsonable(specific),
        envelope=envelope,
        correlation_id=correlation_id,
        idempotency_key=idempotency_key,
        expires_at=common.get("expires_at_utc"),
        received_at=now,
        updated_at=now,
        # Accepted and queued in the same transaction: the row is never seen as merely received.
        state=State.QUEUED,
        queued_at=now,
    )
    try:
        # No savepoint: a duplicate aborts the whole transaction, which the BridgeError rolls back.
        command.save(force_insert=True)
    except IntegrityError as exc:
        raise BridgeError(
            409,
            "duplicate_command_id",
            f"command_id {command.command_id!r} was already used with another idempotency key.",
        ) from exc
    CommandEvent.objects.bulk_create(
        [
            CommandEvent(command=command, kind=CommandEvent.Kind.TRANSITION, to_state=State.RECEIVED, at=now),
            CommandEvent(
                command=command,
                kind=CommandEvent.Kind.TRANSITION,
                from_state=State.RECEIVED,
                to_state=State.QUEUED,
                note=f"lane {lane}",
                at=now,
            ),
        ]
    )
    command_enqueue(command=command)
    return command


def accepted_body(command: Command) -> dict[str, Any]:
    """The 202 body of PROTOCOL.md §5."""
    return {
        "status": "accepted",
        "command_id": command.command_id,
        "state": command.state,
        "lane": command.lane,
        "correlation_id": command.correlation_id,
        "idempotency_key": command.idempotency_key,
        "received_at_utc": utc_iso(command.received_at),
    }
