"""Executing one command: claim it, run its executor with retries within its deadline, finish it.

The command row is the truth and the broker only a doorbell: a task delivered twice finds the
row already claimed and does nothing; a worker that died leaves the row `executing`, and the
sweeper sends it back to its lane, where the next attempt reconciles with MT5 before sending.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Callable, Sequence
from concurrent import futures
from contextlib import nullcontext
from datetime import datetime, timedelta
from typing import Any, cast

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Case, F, Q, Value, When
from django.db.models.functions import Coalesce
from django.utils import timezone
from django_q.models import OrmQ

from bridgeproject import context
from bridgeproject.dbutil import one_statement, prepared_cursor
from commands.lanes import Lane
from commands.models import Command, CommandEvent, CommandType
from commands.services import command_enqueue, lane_broker, rings_with_the_commit
from commands.states import State, check_transition
from execution import lease, outages, sql
from execution.adapters.router import TerminalRouter
from execution.executors import EXECUTORS, Context, Step, closed_by_deal
from execution.gateway import DONE, Gateway, GatewayUnavailable, TradeResult
from execution.gateways import get_gateway
from execution.owners import Priority, call_priority
from execution.results import command_finished
from execution.yielding import say, yield_to_the_fast_lane

logger = logging.getLogger("bridge.execution")

FAST_LANE_DEADLINE = timedelta(seconds=settings.FAST_LANE_DEADLINE_SECONDS)
FAST_LANE_LEASE = timedelta(seconds=settings.FAST_LANE_LEASE_SECONDS)
_HOST = socket.gethostname()


def _worker() -> str:
    """The claim's timeline note: the worker that took the command ("which worker had it?")."""
    return f"worker {_HOST} pid {os.getpid()}"  # the pid now: lane workers are forked


def deadline_of(command: Command) -> datetime:
    """Until when a command may still be attempted."""
    if command.expires_at is not None:
        return command.expires_at
    if command.lane == Lane.FAST:
        return command.received_at + FAST_LANE_DEADLINE
    return command.received_at + timedelta(seconds=settings.COMMAND_NORMAL_TTL_SECONDS)


def command_claim(pk: int | None = None, *, lane: str | None = None, spare_doorbell: bool = False) -> Command | None:
    """Take a queued command for execution: command `pk`, or the oldest queued one of `lane`.

    None when there is nothing to take (another delivery already has it). With
    `spare_doorbell`, the claim also deletes one waiting doorbell of the lane when its broker
    is the database: a worker draining the lane takes, with each command after the first, the
    doorbell rung for it, which would otherwise wake a worker for nothing (and so does the risk
    monitor, claiming the protective command it has just raised: `execution.dispatch`).
    """
    check_transition(State.QUEUED, State.EXECUTING)
    now = timezone.now()
    lease_until = now + FAST_LANE_LEASE  # fast commands only: the normal lane's lease is counted from updated_at
    if connection.vendor == "postgresql":
        # One statement: the conditional update, its timeline entry and the spare doorbell.
        params: dict[str, Any] = {
            "pk": pk,
            "lane": lane,
            "now": now,
            "from": State.QUEUED.value,
            "to": State.EXECUTING.value,
            "kind": CommandEvent.Kind.TRANSITION.value,
            "lease": lease_until,
            "worker": _worker(),
        }
        spare = lane is not None and spare_doorbell and rings_with_the_commit(lane)
        if spare and lane is not None:
            params["queue"] = lane_broker(lane).list_key
        if pk is not None:
            statement = sql.CLAIM_ONE_AND_DOORBELL if spare else sql.CLAIM_ONE
        else:
            statement = sql.CLAIM_NEXT_AND_DOORBELL if spare else sql.CLAIM_NEXT
        with one_statement(), prepared_cursor() as cursor:
            cursor.execute(statement, params)
            row = cursor.fetchone()
        if row is None:
            return None
        command = _claimed(row)
    else:
        with transaction.atomic():
            queued = Command.objects.filter(state=State.QUEUED)
            if pk is None:
                pk = queued.filter(lane=lane).order_by("updated_at").values_list("pk", flat=True).first()
            if pk is None:
                return None
            claimed = queued.filter(pk=pk).update(
                state=State.EXECUTING,
                started_at=Coalesce("started_at", Value(now)),
                updated_at=now,
                lease_until=Case(When(lane=Lane.FAST, then=Value(lease_until)), default=None),
            )
            if not claimed:
                return None
            CommandEvent.objects.create(
                command_id=pk,
                kind=CommandEvent.Kind.TRANSITION,
                from_state=State.QUEUED,
                to_state=State.EXECUTING,
                note=_worker(),
                at=now,
            )
            if spare_doorbell and lane is not None and rings_with_the_commit(lane):
                spare = OrmQ.objects.filter(key=lane_broker(lane).list_key, lock__lt=now)
                spare.filter(pk__in=list(spare.values_list("pk", flat=True)[:1])).delete()
        # The policy is read only by the executors that need it (open_position asks for it).
        command = Command.objects.select_related("account", "tenant").get(pk=pk)
    # `started_at` is the first claim's. A command claimed before (its worker vanished and the
    # sweeper sent it back) may have reached MT5 with no attempt recorded: a worker can die
    # between sending and recording. It reconciles before sending, like any later attempt.
    command.claimed_before = command.started_at is not None and command.started_at < now
    return command


def _claimed(row: Sequence[Any]) -> Command:
    """The claimed command, its account and its tenant, from the claim statement's one row."""
    command = sql.COMMAND.read(row[: sql.COMMAND.width])
    command.account = sql.ACCOUNT.read(row[sql.COMMAND.width : sql.COMMAND.width + sql.ACCOUNT.width])
    tenant_at = sql.COMMAND.width + sql.ACCOUNT.width
    command.tenant = sql.TENANT.read(row[tenant_at : tenant_at + sql.TENANT.width])
    return command


def _finish(command: Command, step: Step, attempts: list[tuple[datetime, TradeResult]] | None = None) -> None:
    """The command's terminal state, with the attempts not yet written, in one transaction."""
    lease.check(command)
    with transaction.atomic():
        _write_attempts(command, attempts or [], counted_by_caller=True)
        command.transition(
            step.state,
            note=step.error_message[:500],
            result=step.result or None,
            error_code=step.error_code,
            error_message=step.error_message,
            attempts=command.attempts,  # the count in the same row update as the state
        )
        command_finished(command)
        if command.lane == Lane.FAST:
            say("idle", command.pk)


def _write_attempts(
    command: Command, attempts: list[tuple[datetime, TradeResult]], *, counted_by_caller: bool = False
) -> None:
    """Write each attempt's timeline entry (what was sent and answered) and count it on the
    command, unless the caller's own update of the row writes the count.

    Written with the command's next state (its finish, or before a pause to retry), not one
    commit each: an attempt that reached MT5 and died with its worker unwritten is found by
    reconciling, like any command claimed before.
    """
    first = command.attempts - len(attempts) + 1  # command.attempts counts them already
    for number, (at, result) in enumerate(attempts, start=first):
        note = f"{result.retcode_name}: {result.message}"
        response = result.as_json()
        if connection.vendor == "postgresql":
            # Inside the finish's transaction no savepoint is wanted: a failure undoes the finish too.
            written_with = nullcontext() if counted_by_caller else one_statement()
            with written_with, prepared_cursor() as cursor:
                cursor.execute(
                    sql.ATTEMPT if counted_by_caller else sql.COUNTED_ATTEMPT,
                    {
                        "number": number,
                        "pk": command.pk,
                        "now": at,
                        "kind": CommandEvent.Kind.ATTEMPT.value,
                        "note": note,
                        "request": None if result.request is None else json.dumps(result.request),
                        "response": None if response is None else json.dumps(response),
                    },
                )
            continue
        if not counted_by_caller:
            Command.objects.filter(pk=command.pk).update(attempts=F("attempts") + 1, updated_at=at)
        CommandEvent.objects.create(
            command=command,
            kind=CommandEvent.Kind.ATTEMPT,
            attempt=number,
            note=note,
            request=result.request,
            response=response,
            at=at,
        )
    attempts.clear()


def command_execute(pk: int) -> str | None:
    """Run one command to a terminal state; returns that state (None if not claimed)."""
    command = command_claim(pk)
    return None if command is None else _run_in_scope(command)


def command_run(command: Command) -> str | None:
    """Run a command ``command_claim`` gave us to a terminal state; returns that state (None when
    its lease was taken back meanwhile)."""
    return _run_in_scope(command)


def lane_run(lane: str) -> int:
    """Answer one doorbell of `lane`: run its oldest queued command, and go on with the next ones
    for up to NORMAL_LANE_DRAIN_SECONDS (FAST_LANE_DRAIN_SECONDS on the fast lane); returns how
    many commands ran.

    Draining is what lets the normal lane keep up with a backlog: django-q2's own bookkeeping of
    a task costs more than most commands, so a worker pays it once for many. On the fast lane it
    is what keeps a command from being stranded: a doorbell runs the lane's oldest command, not
    the one it was rung for, so after a crash lost one doorbell, every command after the lost one
    would otherwise wait for the sweeper's next ring. The other fast workers still answer their
    own doorbells at once (claims skip each other's rows), so a drain never queues a protective
    command behind another. The deadline is checked before each claim, never during a command,
    so a doorbell's run stays far below the cluster's task timeout.
    """
    normal = lane == Lane.NORMAL
    seconds = settings.NORMAL_LANE_DRAIN_SECONDS if normal else settings.FAST_LANE_DRAIN_SECONDS
    until = timezone.now() + timedelta(seconds=seconds)
    ran = 0
    while True:
        if normal:
            yield_to_the_fast_lane()
        command = command_claim(lane=lane, spare_doorbell=ran > 0)
        if command is None:
            return ran
        _run_in_scope(command)
        ran += 1
        if timezone.now() >= until:
            return ran


def _run_in_scope(command: Command) -> str | None:
    with context.scope(
        correlation_id=command.correlation_id,
        tenant=command.tenant.tenant_id,
        account=command.account.login,
        command_id=command.command_id,
    ):
        lease.hold(command)
        try:
            return _run(command)
        except lease.LeaseLost:
            # Taken back while this worker still ran it: the next claim reconciles what was sent.
            logger.warning("command abandoned: its lease was taken back")
            return None
        finally:
            lease.release(command)


def _run(command: Command) -> str:
    now = timezone.now()
    deadline = deadline_of(command)
    if now > deadline:
        step = Step(State.EXPIRED, error_code="expired", error_message=f"Past its deadline {deadline.isoformat()}.")
        _finish(command, step)
        return step.state
    # On its terminal, a fast command goes before every waiting read and normal command.
    with call_priority(Priority.FAST if command.lane == Lane.FAST else Priority.NORMAL):
        return _run_attempts(command, deadline)


def _run_attempts(command: Command, deadline: datetime) -> str:
    gateway = get_gateway()
    if isinstance(gateway, TerminalRouter):
        _settle_sent_ahead(command, gateway)
        done = _filled_ahead(command, gateway)
        if done is not None:  # its close, sent ahead from here, filled: nothing to send or read
            _finish(command, done)
            logger.info("command finished", extra={"state": done.state, "closed_ahead": True})
            return done.state
    # Anything sent before (an earlier delivery) must be found before anything is sent again.
    reconcile = command.attempts > 0 or getattr(command, "claimed_before", False)
    maybe_sent = False
    unwritten: list[tuple[datetime, TradeResult]] = []

    def record(result: TradeResult) -> None:
        nonlocal maybe_sent
        maybe_sent = maybe_sent or result.maybe_executed
        outages.note_result(result)
        command.attempts += 1
        unwritten.append((timezone.now(), result))

    for backoff in (*settings.COMMAND_RETRY_BACKOFF_SECONDS, None):
        step = _attempt(command, gateway, record, reconcile)
        if not step.retry or backoff is None or timezone.now() + timedelta(seconds=backoff) > deadline:
            if step.retry and maybe_sent:
                # The last answer was lost: look once more, sending nothing, before saying failed.
                # ReadOnlyGateway answers every Gateway method through __getattr__ (it wraps, not subclasses).
                found = _attempt(command, cast(Gateway, ReadOnlyGateway(gateway)), record, reconcile=True)
                step = found if found.state == State.SUCCEEDED else step
            if step.retry and step.state != State.SUCCEEDED:
                step.error_message = f"{step.error_message} (gave up after {command.attempts} attempts)".strip()
            _finish(command, step, unwritten)
            logger.info("command finished", extra={"state": step.state, "attempts": command.attempts})
            return step.state
        reconcile = True
        _write_attempts(command, unwritten)  # visible while the command waits to retry
        if command.lane == Lane.FAST:
            say("idle", command.pk)  # a pause is no work: the normal lane may go on meanwhile
        logger.warning("retrying command", extra={"error": step.error_message, "backoff_s": backoff})
        time.sleep(backoff)
    raise AssertionError("unreachable")


def _settle_sent_ahead(command: Command, gateway: TerminalRouter) -> None:
    """A protective close command whose closes this very process sent ahead (the risk monitor's
    dispatcher, ``risk.ahead``) and whose answers had not come when it was recorded: wait here for
    those answers (at most until the envelope's ``until``), then tell the attempt which are still
    unknown. A close refused is then closed by the attempt at once, and one that filled is found
    by its tag, without the attempt polling the terminal for them. Run elsewhere (a lane worker),
    the attempt waits on the terminal for the closes in flight (``executors._closed_ahead``)."""
    ahead = (command.envelope or {}).get("sent_ahead")
    if not ahead or not ahead.get("in_flight"):
        return
    handles = gateway.closes_sent_ahead(ahead["tag"])
    in_flight = [int(t) for t in ahead["in_flight"]]
    waited = [handles[t] for t in in_flight if t in handles]
    if not waited:
        return
    remaining = (datetime.fromisoformat(ahead["until"]) - timezone.now()).total_seconds()
    futures.wait(waited, timeout=max(remaining, 0.0))
    still = [t for t in in_flight if t not in handles or gateway.close_outcome(handles[t]) == "in_flight"]
    command.envelope = {**command.envelope, "sent_ahead": {**ahead, "in_flight": still}}


def _filled_ahead(command: Command, gateway: TerminalRouter) -> Step | None:
    """A protective ``close_position`` whose close this process sent ahead and saw filled in full,
    its deal read by the terminal's owner right after the fill: that deal is its result, as when
    an attempt reconciles by tag, with no attempt of its own (no round trip to the owner). Any
    other case (not sent from here, no answer yet, refused, lost, a partial fill) is the
    attempt's."""
    ahead = (command.envelope or {}).get("sent_ahead")
    if not ahead or command.command_type != CommandType.CLOSE_POSITION or command.payload.get("volume"):
        return None
    handle = gateway.closes_sent_ahead(ahead["tag"]).get(int(command.payload["ticket"]))
    if handle is None or not handle.done() or handle.exception() is not None:
        return None
    closed = handle.result()
    if closed.result.outcome != DONE or closed.result.partial or closed.deal is None:
        return None
    return closed_by_deal(closed.deal)


def _attempt(command: Command, gateway: Gateway, record: Callable[[TradeResult], None], reconcile: bool) -> Step:
    lease.check(command)  # nothing is sent for a command another worker has taken over
    try:
        if isinstance(gateway, TerminalRouter):
            # The whole attempt on the terminal's owner: one round trip, not one per MT5 call.
            step, results = gateway.run_on_owner(
                command.account.login, command.account.server, attempt_on_owner, command, reconcile
            )
            for result in results:
                record(result)
        else:
            step = _execute(command, gateway, record, reconcile)
    except GatewayUnavailable as exc:  # the owner went during the attempt: what it did is unknown
        step = _unavailable(exc)
    if step.error_code == UNAVAILABLE:
        outages.note_failure(step.error_message)
    return step


def attempt_on_owner(gateway: Gateway, command: Command, reconcile: bool) -> tuple[Step, list[TradeResult]]:
    """One attempt of a command, run by its terminal's owner (``TerminalRouter.run_on_owner``):
    the step and every trade answer on the way, also when MT5 went away after one was sent (the
    caller records them all: what may have been sent decides the last look)."""
    results: list[TradeResult] = []
    return _execute(command, gateway, results.append, reconcile), results


UNAVAILABLE = "mt5_unavailable"


def _execute(command: Command, gateway: Gateway, record: Callable[[TradeResult], None], reconcile: bool) -> Step:
    """The command's executor on ``gateway``; MT5 going away is a failed step to retry."""
    ctx = Context(command=command, gateway=gateway, record=record, reconcile=reconcile)
    try:
        return EXECUTORS[command.command_type](ctx)
    except GatewayUnavailable as exc:
        return _unavailable(exc)


def _unavailable(exc: GatewayUnavailable) -> Step:
    return Step(State.FAILED, error_code=UNAVAILABLE, error_message=exc.message, retry=True)


class ReadOnlyGateway:
    """A gateway that reads but refuses to send: for the last look after a lost answer."""

    _TRADES = frozenset({"open_position", "close_position", "modify_position", "cancel_order", "place_pending_order"})

    def __init__(self, inner: Gateway) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        if name in self._TRADES:

            def refuse(*args: Any, **kwargs: Any) -> TradeResult:
                raise GatewayUnavailable("the deadline has passed: nothing more is sent")

            return refuse
        return getattr(self._inner, name)


def sweep_stuck(
    *, executing_lease: timedelta | None = None, queued_grace: timedelta | None = None, fast_only: bool = False
) -> int:
    """Send commands whose worker vanished back to their lane; returns how many were re-queued.

    `executing` past its lease: the worker died mid-command (the next attempt reconciles). A fast
    command's lease is `lease_until`, renewed by its worker (execution.lease); a normal one's is
    COMMAND_EXECUTING_LEASE_SECONDS after it last moved. `queued` past the grace: the doorbell was
    lost (Redis has no delivery receipts) or swallowed (a worker killed with it, or the task queue
    of a cluster whose worker died holding its lock); a fast command is rung again after
    COMMAND_FAST_QUEUED_GRACE_SECONDS. A duplicate doorbell is harmless: the claim lets one through.
    `fast_only`: the fast lane's part alone, cheap enough to run every FAST_LANE_SWEEP_SECONDS.
    """
    now = timezone.now()
    silent = executing_lease or timedelta(seconds=settings.COMMAND_EXECUTING_LEASE_SECONDS)
    grace = queued_grace or timedelta(seconds=settings.COMMAND_QUEUED_GRACE_SECONDS)
    requeued = 0
    lapsed = Q(lease_until__lt=now)
    if not fast_only:
        lapsed |= Q(lease_until__isnull=True, updated_at__lt=now - silent)
    executing = Command.objects.filter(lapsed, state=State.EXECUTING)
    for pk in list(executing.values_list("pk", flat=True)[:500]):
        with transaction.atomic():
            # Locked, and the lease looked at again: a renewal may have just come in.
            command = executing.select_for_update(skip_locked=True).filter(pk=pk).first()
            if command is None:
                continue
            command.transition(
                State.QUEUED, note="re-queued by the sweeper: the worker stopped answering", lease_until=None
            )
            command_enqueue(command=command)
            requeued += 1
    fast_grace = timedelta(seconds=settings.COMMAND_FAST_QUEUED_GRACE_SECONDS)
    waited_too_long = Q(lane=Lane.FAST, updated_at__lt=now - fast_grace)
    if not fast_only:
        waited_too_long |= Q(updated_at__lt=now - grace)
    forgotten = Command.objects.filter(waited_too_long, state=State.QUEUED)[:500]
    for command in forgotten:
        with transaction.atomic():
            if Command.objects.filter(pk=command.pk, state=State.QUEUED).update(updated_at=timezone.now()):
                CommandEvent.objects.create(
                    command=command,
                    kind=CommandEvent.Kind.TRANSITION,
                    from_state=State.QUEUED,
                    to_state=State.QUEUED,
                    note="doorbell rung again by the sweeper",
                )
                command_enqueue(command=command)
                requeued += 1
    return requeued
