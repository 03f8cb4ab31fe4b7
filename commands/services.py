"""Writes for commands: acceptance (row + timeline + task + idempotency record, all or nothing)."""

from __future__ import annotations

import json
import logging
import time
import uuid
from datetime import datetime
from typing import Any

import redis
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from django_q.brokers import Broker
from django_q.brokers.orm import ORM as OrmBroker
from django_q.brokers.redis_broker import Redis as RedisBroker
from django_q.conf import Conf
from django_q.signing import SignedPackage
from redis.backoff import NoBackoff
from redis.retry import Retry

from bridgeproject.dbutil import one_statement, prepared_cursor
from bridgeproject.errors import BridgeError
from bridgeproject.jsonutil import jsonable, utc_iso
from commands import sql
from commands.idempotency import complete
from commands.lanes import CLUSTER_FOR_LANE, QUEUE_KEY_FOR_LANE, Lane, lane_for
from commands.models import Command, CommandEvent, IdempotencyRecord, Source
from commands.states import State
from policies.models import TradingAccount
from tenancy.models import Tenant

logger = logging.getLogger("bridge.commands")

# A doorbell names its lane, not a command: whichever worker answers takes the lane's oldest
# queued command(s) (execution.runner.lane_run), so any doorbell serves any command of the lane.
LANE_TASK = "execution.tasks.run_lane"
COMMAND_ID_UNIQUE = "command_tenant_command_id_unique"

_brokers: dict[tuple[str, str], Broker] = {}


def lane_broker(lane: str) -> Broker:
    """The lane's broker, built once per process (django-q2 builds one per call otherwise).

    Built here rather than by django-q2's get_broker, which picks the broker of the cluster the
    calling process runs in: the web, the monitor and either lane must all ring the right one.
    """
    kind = settings.FAST_LANE_BROKER if lane == Lane.FAST else "orm"
    broker = _brokers.get((lane, kind))
    if broker is None:
        if kind == "redis":
            broker = RedisBroker(list_key=QUEUE_KEY_FOR_LANE[lane])
            broker.connection = bounded_redis(settings.REDIS_URL, settings.REDIS_SOCKET_TIMEOUT_SECONDS)
        else:
            broker = OrmBroker(list_key=QUEUE_KEY_FOR_LANE[lane])
        _brokers[(lane, kind)] = broker
    return broker


def bounded_redis(url: str, timeout: float) -> redis.Redis:
    """A Redis client that never waits on a hung server longer than `timeout` (to connect, then
    for each answer) and never retries by itself: redis-py's defaults (5 s, three retries with
    backoff) would hold a web request for seconds on a server that stopped answering."""
    return redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0))


def rings_with_the_commit(lane: str) -> bool:
    """Whether the lane's doorbell is a row written in the command's own transaction (ORM broker)."""
    return isinstance(lane_broker(lane), OrmBroker)


def task_package(lane: str) -> str:
    """The signed task django-q2's `async_task(LANE_TASK, lane)` would enqueue on the lane."""
    task: dict[str, Any] = {
        "id": uuid.uuid4().hex,  # django-q2's own ids, without the human-readable name it drops here
        "name": f"{lane} lane",
        "func": LANE_TASK,
        "args": (lane,),
        "group": lane,
        "cluster": CLUSTER_FOR_LANE[lane],
        "kwargs": {},
        "started": timezone.now(),
    }
    if Conf.ACK_FAILURES:
        task["ack_failure"] = True
    return SignedPackage.dumps(task)


def command_enqueue(*, command: Command) -> None:
    """Ring the lane's doorbell. With the ORM broker this row commits or rolls back with the caller;
    Redis is rung once the caller's transaction has committed (at once outside one)."""
    broker, package = lane_broker(command.lane), task_package(command.lane)
    if rings_with_the_commit(command.lane):
        broker.enqueue(package)
    else:
        transaction.on_commit(lambda: _ring(broker, package))


# After Redis failed to ring, when it may be tried again (time.monotonic()): a hung Redis costs one
# request REDIS_SOCKET_TIMEOUT_SECONDS, not every request.
_redis_resting_until = 0.0


def _ring(broker: Broker, package: str) -> None:
    global _redis_resting_until
    if time.monotonic() < _redis_resting_until:
        return  # the command is committed and queued: the sweeper rings it again
    try:
        broker.enqueue(package)
    except Exception:  # the command is committed: the sweeper rings again; never fail the request
        _redis_resting_until = time.monotonic() + settings.REDIS_RETRY_AFTER_SECONDS
        logger.exception("could not ring the lane's doorbell; the sweeper will")


def _duplicate_command_id(command: Command) -> BridgeError:
    return BridgeError(
        409, "duplicate_command_id", f"command_id {command.command_id!r} was already used with another idempotency key."
    )


def _new_command(
    *,
    tenant: Tenant,
    account: TradingAccount,
    common: dict[str, Any],
    specific: dict[str, Any],
    envelope: dict[str, Any],
    correlation_id: str,
    idempotency_key: str,
    source: str,
    now: datetime,
) -> Command:
    """The command row as accepted: queued on its lane at once (it is never seen as merely received)."""
    lane = lane_for(
        priority=common["priority"], fast_lane=common["fast_lane"], raised_by_bridge=source == Source.BRIDGE
    )
    return Command(
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
        state=State.QUEUED,
        queued_at=now,
    )


def _queued_note(command: Command) -> str:
    return f"lane {command.lane}"


def _timeline(command: Command) -> list[CommandEvent]:
    at = command.received_at
    return [
        CommandEvent(command=command, kind=CommandEvent.Kind.TRANSITION, to_state=State.RECEIVED, at=at),
        CommandEvent(
            command=command,
            kind=CommandEvent.Kind.TRANSITION,
            from_state=State.RECEIVED,
            to_state=State.QUEUED,
            note=_queued_note(command),
            at=at,
        ),
    ]


@transaction.atomic(savepoint=False)
def _store(command: Command) -> None:
    try:
        # No savepoint: a duplicate aborts the whole transaction, which the BridgeError rolls back.
        command.save(force_insert=True)
    except IntegrityError as exc:
        raise _duplicate_command_id(command) from exc
    CommandEvent.objects.bulk_create(_timeline(command))
    command_enqueue(command=command)


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
    """Create a command, queue it on its lane, and enqueue its task — all or nothing: on
    PostgreSQL in one prepared statement (the risk monitor's protective commands: one round trip
    instead of three inside the breach's transaction), elsewhere in one transaction. Both write
    the same rows; a test holds them equal."""
    command = _new_command(
        tenant=tenant,
        account=account,
        common=common,
        specific=specific,
        envelope=envelope,
        correlation_id=correlation_id,
        idempotency_key=idempotency_key,
        source=source,
        now=received_at or timezone.now(),
    )
    if connection.vendor != "postgresql":
        _store(command)
        return command
    with_task = rings_with_the_commit(command.lane)
    params = _create_params(command, with_task=with_task)
    try:
        # One statement: atomic by itself. No savepoint inside a caller's transaction, as _store:
        # a duplicate aborts the whole transaction.
        with prepared_cursor() as cursor:
            cursor.execute(sql.CREATE_WITH_TASK if with_task else sql.CREATE, params)
            command.pk = cursor.fetchone()[0]
            if not with_task:
                command_enqueue(command=command)  # Redis: rung after the commit
    except IntegrityError as exc:
        raise _duplicate_command_id(command) from exc
    command._state.adding, command._state.db = False, connection.alias
    return command


def command_accept(
    *,
    tenant: Tenant,
    account: TradingAccount,
    common: dict[str, Any],
    specific: dict[str, Any],
    envelope: dict[str, Any],
    correlation_id: str,
    record: IdempotencyRecord,
) -> tuple[int, dict[str, Any]]:
    """Accept an API command and store its 202 under the idempotency key — all or nothing.

    The command row, its timeline, its task and the completed idempotency record commit
    together: in one statement on PostgreSQL (the intake's hot path: one round trip instead of
    eight), in one transaction elsewhere. Both write the same rows; a test holds them equal.
    """
    command = _new_command(
        tenant=tenant,
        account=account,
        common=common,
        specific=specific,
        envelope=envelope,
        correlation_id=correlation_id,
        idempotency_key=record.key,
        source=Source.API,
        now=record.created_at,
    )
    if connection.vendor != "postgresql":
        with transaction.atomic():
            _store(command)
            body = accepted_body(command)
            complete(record, 202, body, at=command.received_at).save(force_insert=True)
        return 202, body
    with_task = rings_with_the_commit(command.lane)
    body = accepted_body(command)
    complete(record, 202, body, at=command.received_at)
    try:
        # Inside a caller's transaction a conflict leaves it usable for the replay lookup.
        with one_statement(), prepared_cursor() as cursor:
            cursor.execute(
                sql.ACCEPT_WITH_TASK if with_task else sql.ACCEPT, _accept_params(command, record, with_task=with_task)
            )
            command.pk = cursor.fetchone()[0]
            if not with_task:
                command_enqueue(command=command)  # Redis: rung after the commit
    except IntegrityError as exc:
        if getattr(getattr(exc.__cause__, "diag", None), "constraint_name", None) == COMMAND_ID_UNIQUE:
            raise _duplicate_command_id(command) from exc
        raise
    return 202, body


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


def _create_params(command: Command, *, with_task: bool) -> dict[str, Any]:
    task = {"queue": lane_broker(command.lane).list_key, "task": task_package(command.lane)} if with_task else {}
    return {
        **task,
        "tenant_id": command.tenant_id,
        "account_id": command.account_id,
        "command_id": command.command_id,
        "command_type": command.command_type,
        "priority": command.priority,
        "lane": command.lane,
        "state": command.state,
        "source": command.source,
        "reason": command.reason,
        "payload": json.dumps(command.payload),
        "envelope": json.dumps(command.envelope),
        "correlation_id": command.correlation_id,
        "idempotency_key": command.idempotency_key,
        "expires_at": command.expires_at,
        "at": command.received_at,
        "transition": CommandEvent.Kind.TRANSITION.value,
        "received": State.RECEIVED.value,
        "lane_note": _queued_note(command),
    }


def _accept_params(command: Command, record: IdempotencyRecord, *, with_task: bool) -> dict[str, Any]:
    return {
        **_create_params(command, with_task=with_task),
        "fingerprint": record.fingerprint,
        "method": record.method,
        "path": record.path,
        "request_type": record.request_type,
        "status_code": record.status_code,
        "response_body": json.dumps(record.response_body),
        "record_correlation_id": record.correlation_id,
        "completed_at": record.completed_at,
        "record_expires_at": record.expires_at,
    }
