"""The risk engine: evaluate an account against its policy, persist the state, act on breaches.

Pure rules live in `policies.risk.rules`; this module is the I/O around them. Exactly one
protective action per (account, rule, scope, policy_version) is guaranteed by a unique
constraint, so repeated evaluations, restarts and several monitors can all see the same breach.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, NamedTuple

from django.conf import settings
from django.db import IntegrityError, connections, transaction
from django.db.models import BooleanField, Count, Max, QuerySet, Sum
from django.db.models.expressions import RawSQL
from django.utils import timezone

from bridgeproject import context
from bridgeproject.jsonutil import jsonable, utc_iso
from commands.models import Command, CommandType, Priority, Source
from commands.services import command_create
from execution import outages
from execution.gateway import AccountSnapshot, Gateway, GatewayUnavailable
from policies.models import AccountRisk, PolicySnapshot, ProtectiveAction, RiskSample, TradingAccount
from policies.risk import rules

logger = logging.getLogger("bridge.risk")

# The parsed policy of each account's latest snapshot seen here, by account: a newer snapshot
# replaces its account's entry, so a process remembers one policy an account, never its history.
_policies: dict[int, tuple[int, rules.Policy]] = {}  # account pk -> (snapshot pk, policy)
# A chart point per account every SAMPLE_EVERY, and at every new breach.
SAMPLE_EVERY = timedelta(seconds=5)


def figures_every() -> timedelta:
    """How often the monitor refreshes an account's figures when nothing changed: often enough
    that health (stale past RISK_MAX_SNAPSHOT_AGE_MS) never sees a watched account as stale."""
    return min(SAMPLE_EVERY, timedelta(milliseconds=settings.RISK_MAX_SNAPSHOT_AGE_MS) / 2)


def _remembered_policy(account_pk: int, snapshot_pk: int) -> rules.Policy | None:
    remembered = _policies.get(account_pk)
    return remembered[1] if remembered is not None and remembered[0] == snapshot_pk else None


def _policy_parsed(account_pk: int, snapshot_pk: int, payload: dict[str, Any]) -> rules.Policy:
    policy = _remembered_policy(account_pk, snapshot_pk)
    if policy is None:
        policy = rules.Policy.from_payload(payload)
        remembered = _policies.get(account_pk)
        if remembered is None or remembered[0] < snapshot_pk:  # a newer snapshot has a higher id
            _policies[account_pk] = (snapshot_pk, policy)
    return policy


def policy_of(snapshot: PolicySnapshot) -> rules.Policy:
    """The parsed policy of a stored snapshot (snapshots never change, so parse once)."""
    return _policy_parsed(snapshot.account_id, snapshot.pk, snapshot.payload)


def forget_caches() -> None:
    """Drop what this process remembers of policies, risk states and recorded breaches (tests)."""
    _policies.clear()
    _states.clear()
    _recorded.clear()


def _any_of(queryset: QuerySet[Any], column: str, values: list[int]) -> QuerySet[Any]:
    """`column IN values`; on PostgreSQL one array parameter, because a thousand placeholders
    cost the driver and the ORM more than the query itself."""
    if connections[queryset.db].vendor != "postgresql":
        return queryset.filter(**{f"{column}__in": values})
    # The array as one text literal: the driver's client-side quoting of a list is slower.
    sql = f'"{queryset.model._meta.db_table}"."{column}" = ANY(%s::bigint[])'
    literal = "{" + ",".join(map(str, map(int, values))) + "}"
    return queryset.filter(RawSQL(sql, (literal,), output_field=BooleanField()))  # noqa: S611 - names are the model's


def state_from_row(row: AccountRisk) -> rules.RiskState:
    return rules.RiskState(
        policy_version=row.policy_version,
        initial_balance=row.initial_balance,
        high_water_mark=row.high_water_mark,
        total_floor=row.total_floor,
        daily_reference=row.daily_reference,
        daily_reference_date=row.daily_reference_date,
        daily_reference_source=row.daily_reference_source,  # type: ignore[arg-type]
        violation_count=row.violation_count,
        breached_tickets=frozenset(row.breached_tickets),
        hard_breached=row.hard_breached,
        trading_disabled_until=row.trading_disabled_until,
    )


def _state_to_row(state: rules.RiskState, row: AccountRisk) -> None:
    row.policy_version = state.policy_version
    row.initial_balance = state.initial_balance
    row.high_water_mark = state.high_water_mark
    row.total_floor = state.total_floor
    row.daily_reference = state.daily_reference
    row.daily_reference_date = state.daily_reference_date
    row.daily_reference_source = state.daily_reference_source
    row.violation_count = state.violation_count
    row.breached_tickets = sorted(state.breached_tickets)
    row.hard_breached = state.hard_breached
    row.trading_disabled_until = state.trading_disabled_until


def risk_state_apply_policy(*, account: TradingAccount, snapshot: PolicySnapshot) -> AccountRisk:
    """Bring the durable state to a new policy version at once (called in the snapshot's transaction)."""
    policy = policy_of(snapshot)
    row = AccountRisk.objects.select_for_update().filter(account=account).first()
    old = state_from_row(row) if row is not None else None
    try:
        state = rules.RiskState.apply_policy(old, policy)
    except rules.StalePolicyError:
        return row  # type: ignore[return-value]
    row = row or AccountRisk(account=account)
    _state_to_row(state, row)
    row.trading_block = rules.open_position_block(policy, state, timezone.now()) or ""
    row.updated_at = timezone.now()
    row.save()
    return row


def account_view(snapshot: AccountSnapshot) -> rules.AccountView:
    return rules.AccountView(
        login=snapshot.login,
        balance=snapshot.balance,
        equity=snapshot.equity,
        positions=tuple(
            rules.PositionView(
                ticket=p.ticket, symbol=p.symbol, volume=p.volume, profit=p.profit, swap=p.swap, commission=p.commission
            )
            for p in snapshot.positions
        ),
        observed_at=snapshot.observed_at,
    )


@dataclass(frozen=True)
class Outcome:
    """What an evaluation did (`evaluated` False: it could not look, and `reason` says why)."""

    evaluated: bool
    breaches: int = 0
    actions: int = 0
    reason: str = ""


def risk_evaluate_account(*, account: TradingAccount, gateway: Gateway, now: datetime | None = None) -> Outcome:
    """One evaluation: read MT5, apply the rule table, persist, and raise protective actions."""
    if account.current_policy is None:
        return Outcome(False, reason="no policy")
    try:
        mt5 = gateway.account_snapshot(account.login, account.server)
    except GatewayUnavailable as exc:
        outages.note_failure(exc.message)
        return Outcome(False, reason=f"mt5 unavailable: {exc.message}")
    return risk_evaluate_snapshot(account=account, mt5=mt5, now=now)


def _too_old(mt5: AccountSnapshot, now: datetime) -> str:
    age = now - mt5.observed_at
    if age > timedelta(milliseconds=settings.RISK_MAX_SNAPSHOT_AGE_MS):
        # A stale picture of the account must never close anyone's positions.
        return f"snapshot {age.total_seconds():.1f}s old"
    return ""


def _figures(row: AccountRisk, mt5: AccountSnapshot, evaluation: rules.Evaluation, now: datetime) -> None:
    row.measured = evaluation.measured
    row.balance, row.equity = mt5.balance, mt5.equity
    row.daily_floor = evaluation.daily_floor
    row.trading_block = evaluation.trading_block or ""
    row.snapshot_at = mt5.observed_at
    row.evaluated_at = now
    row.updated_at = now


def _sample(account_pk: int, mt5: AccountSnapshot, evaluation: rules.Evaluation) -> RiskSample:
    return RiskSample(
        account_id=account_pk,
        at=mt5.observed_at,
        balance=mt5.balance,
        equity=mt5.equity,
        daily_floor=evaluation.daily_floor,
        total_floor=evaluation.total_floor,
    )


def risk_evaluate_snapshot(*, account: TradingAccount, mt5: AccountSnapshot, now: datetime | None = None) -> Outcome:
    """The rule table on one MT5 snapshot, under the account's row lock; breaches become actions."""
    now = now or timezone.now()
    stale = _too_old(mt5, now)
    if stale:
        return Outcome(False, reason=stale)
    snapshot_row = account.current_policy
    if snapshot_row is None:
        return Outcome(False, reason="no policy")
    policy = policy_of(snapshot_row)
    with transaction.atomic():
        row = AccountRisk.objects.select_for_update().filter(account=account).first()
        if row is None or row.policy_version != policy.policy_version:
            row = risk_state_apply_policy(account=account, snapshot=snapshot_row)
        state = state_from_row(row)
        evaluation = rules.evaluate(account_view(mt5), policy, state)
        if evaluation.state is not state:
            _state_to_row(evaluation.state, row)
        last_evaluated = row.evaluated_at
        _figures(row, mt5, evaluation, now)
        row.save()
        if evaluation.breaches or _due(account.pk, last_evaluated, now, SAMPLE_EVERY):
            _sample(account.pk, mt5, evaluation).save()
        actions = sum(
            1
            for breach in evaluation.breaches
            if protective_action_raise(account=account, breach=breach, snapshot=mt5, policy=policy)
        )
    return Outcome(True, breaches=len(evaluation.breaches), actions=actions)


# --------------------------------------------------------------------------------------------
# The monitor's cycle over many accounts
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WatchedAccount:
    """What the monitor keeps of an account between cycles: enough to read and judge it.

    Only the judgement that nothing happened uses it; anything that writes state or acts reads
    the account afresh, so a cached policy can delay nothing but the quiet path."""

    pk: int
    login: int
    server: str
    snapshot_pk: int
    policy: rules.Policy

    @classmethod
    def of(cls, account: TradingAccount) -> WatchedAccount | None:
        snapshot = account.current_policy
        if snapshot is None:
            return None
        return cls(account.pk, account.login, account.server, snapshot.pk, policy_of(snapshot))


def _watched_queryset() -> QuerySet[TradingAccount]:
    return TradingAccount.objects.filter(current_policy__isnull=False)


def watched_version() -> tuple[int, int, int]:
    """A cheap fingerprint of which accounts have which policy: (count, sum, max) of the current
    snapshot ids. A new snapshot always gets a higher id than the one it replaces, so any
    registration, new version or removal changes it, whatever order transactions commit in."""
    figures = _watched_queryset().aggregate(
        count=Count("pk"), total=Sum("current_policy_id"), top=Max("current_policy_id")
    )
    return figures["count"], figures["total"] or 0, figures["top"] or 0


def watched_accounts() -> list[WatchedAccount]:
    """Every account with a policy, with its policy parsed (snapshots are parsed once per process)."""
    rows = list(_watched_queryset().order_by("pk").values_list("pk", "login", "server", "current_policy_id"))
    policies = {row[3]: policy for row in rows if (policy := _remembered_policy(row[0], row[3])) is not None}
    missing = sorted({row[3] for row in rows} - policies.keys())
    for start in range(0, len(missing), 1000):
        for pk, account_pk, payload in PolicySnapshot.objects.filter(pk__in=missing[start : start + 1000]).values_list(
            "pk", "account_id", "payload"
        ):
            try:
                policies[pk] = _policy_parsed(account_pk, pk, payload)
            except rules.PolicyError:
                logger.exception("unreadable policy snapshot", extra={"snapshot": pk})
    return [
        WatchedAccount(pk, login, server, snapshot_pk, policies[snapshot_pk])
        for pk, login, server, snapshot_pk in rows
        if snapshot_pk in policies
    ]


# The durable state as the rules see it, per account, with the row version it was read at.
STATE_FIELDS = (
    "policy_version",
    "initial_balance",
    "high_water_mark",
    "total_floor",
    "daily_reference",
    "daily_reference_date",
    "daily_reference_source",
    "violation_count",
    "breached_tickets",
    "hard_breached",
    "trading_disabled_until",
)
# (account, rule_key, scope, policy_version) of breaches whose protective action is committed:
# seeing one again needs no transaction (the unique constraint would refuse it anyway).
_recorded: set[tuple[int, str, str, int]] = set()


class _RiskRow(NamedTuple):
    pk: int
    # The row's version when read: PostgreSQL's xmin (every write makes a new one), elsewhere
    # updated_at (every write of the risk engine sets it). Figures are written only over it.
    version: Any
    evaluated_at: datetime | None
    state: rules.RiskState


_states: dict[int, _RiskRow] = {}


def _state_from_values(values: tuple[Any, ...]) -> rules.RiskState:
    (version, initial, hwm, floor, reference, reference_date, source, count, tickets, hard, until) = values
    return rules.RiskState(
        policy_version=version,
        initial_balance=initial,
        high_water_mark=hwm,
        total_floor=floor,
        daily_reference=reference,
        daily_reference_date=reference_date,
        daily_reference_source=source,
        violation_count=count,
        breached_tickets=frozenset(tickets),
        hard_breached=hard,
        trading_disabled_until=until,
    )


def _versioned() -> bool:
    return connections[AccountRisk.objects.db].vendor == "postgresql"


def _risk_rows(account_pks: list[int]) -> dict[int, _RiskRow]:
    """The risk rows of these accounts. On PostgreSQL only their versions are read each cycle, and
    whole rows only where the version moved: a thousand quiet accounts cost a thousand integers."""
    if len(_states) > 200_000:
        _states.clear()
    risk = AccountRisk.objects.all()
    if _versioned():
        version = RawSQL(f'"{AccountRisk._meta.db_table}"."xmin"::text', ())  # noqa: S611 - no input
        versions = dict(_any_of(risk, "account_id", account_pks).annotate(v=version).values_list("account_id", "v"))
        stale = [pk for pk, v in versions.items() if pk not in _states or _states[pk].version != v]
        fields: tuple[str, ...] = ("account_id", "pk", "v", "evaluated_at", *STATE_FIELDS)
        changed = _any_of(risk, "account_id", stale).annotate(v=version) if stale else None
    else:
        versions = None
        fields = ("account_id", "pk", "updated_at", "evaluated_at", *STATE_FIELDS)
        changed = _any_of(risk, "account_id", account_pks)
    if changed is not None:
        for values in changed.values_list(*fields):
            _states[values[0]] = _RiskRow(values[1], values[2], values[3], _state_from_values(values[4:]))
    present = versions.keys() if versions is not None else account_pks
    return {pk: _states[pk] for pk in present if pk in _states}


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _spread(account_pk: int) -> int:
    """A well-mixed number per account: its place in the refresh schedule."""
    return (account_pk * 0x9E3779B97F4A7C15) % (1 << 64)


def _micros(at: datetime) -> int:
    return (at - _EPOCH) // _MICROSECOND


def _slot_changed(spread: int, last: int, now: int, period: int) -> bool:
    if period <= 0:
        return True
    phase = spread % period
    return now - last >= period or (now + phase) // period != (last + phase) // period


def _due(account_pk: int, last: datetime | None, now: datetime, every: timedelta) -> bool:
    """True once per `every` for each account, at its own phase: the figures of a thousand quiet
    accounts are written a few at a time, never all in one cycle."""
    return last is None or _slot_changed(_spread(account_pk), _micros(last), _micros(now), every // _MICROSECOND)


class _Figures(NamedTuple):
    risk_pk: int
    version: Any  # the row's version when read: written only if nobody wrote it since
    measured: Decimal
    balance: Decimal
    equity: Decimal
    daily_floor: Decimal
    trading_block: str
    snapshot_at: datetime


def _element(value: object) -> str:
    if value is None:
        return "NULL"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def _array(values: Iterable[object]) -> str:
    """A PostgreSQL array literal of plain values (ids, numbers, times, short words): one text
    parameter costs the driver far less than a list of a thousand values."""
    return "{" + ",".join(map(_element, values)) + "}"


def _write_figures(figures: list[_Figures], now: datetime) -> None:
    """Refresh the figures of quiet accounts in one statement, in primary key order (two monitors
    overlapping for a cycle lock rows in one order). A row written since it was read (a policy,
    a breach) is left alone: its own figures are newer."""
    figures = sorted(figures)
    if not _versioned():
        with transaction.atomic():
            for f in figures:
                AccountRisk.objects.filter(pk=f.risk_pk, updated_at=f.version).update(
                    measured=f.measured,
                    balance=f.balance,
                    equity=f.equity,
                    daily_floor=f.daily_floor,
                    trading_block=f.trading_block,
                    snapshot_at=f.snapshot_at,
                    evaluated_at=now,
                    updated_at=now,
                )
        return
    sql = f"""
        UPDATE "{AccountRisk._meta.db_table}" AS r
        SET measured = v.measured, balance = v.balance, equity = v.equity, daily_floor = v.daily_floor,
            trading_block = v.trading_block, snapshot_at = v.snapshot_at, evaluated_at = %s, updated_at = %s
        FROM unnest(%s::bigint[], %s::text[], %s::numeric[], %s::numeric[], %s::numeric[],
                    %s::numeric[], %s::varchar[], %s::timestamptz[])
             AS v(id, version, measured, balance, equity, daily_floor, trading_block, snapshot_at)
        WHERE r.id = v.id AND r.xmin::text = v.version
    """  # noqa: S608 - the table name is the model's; every value is a parameter
    with connections[AccountRisk.objects.db].cursor() as cursor:
        cursor.execute(sql, [now, now, *(_array(column) for column in zip(*figures, strict=True))])


def _write_samples(samples: list[RiskSample]) -> None:
    """Chart points, in one statement."""
    if not _versioned():
        RiskSample.objects.bulk_create(samples)
        return
    columns = ("account_id", "at", "balance", "equity", "daily_floor", "total_floor")
    sql = f"""
        INSERT INTO "{RiskSample._meta.db_table}" ({", ".join(columns)})
        SELECT * FROM unnest(%s::bigint[], %s::timestamptz[], %s::numeric[], %s::numeric[], %s::numeric[],
                             %s::numeric[])
    """  # noqa: S608 - the table and columns are the model's; every value is a parameter
    with connections[RiskSample.objects.db].cursor() as cursor:
        cursor.execute(sql, [_array(getattr(sample, column) for sample in samples) for column in columns])


Reading = Iterable[tuple[tuple[int, str], AccountSnapshot | Exception]]


def read_accounts(gateway: Gateway, keys: list[tuple[int, str]]) -> Reading:
    """The accounts' MT5 snapshots in `keys` order. A gateway that can hand them over one by one
    (read together, each converted when its turn comes) lets the monitor act on a breach without
    waiting for every other account's conversion first."""
    stream = getattr(gateway, "account_snapshots_stream", None)
    if stream is not None:
        return stream(keys)  # type: ignore[no-any-return]
    return gateway.account_snapshots(keys).items()


def risk_evaluate_many(
    *, accounts: Sequence[TradingAccount | WatchedAccount], gateway: Gateway, now: datetime | None = None
) -> Outcome:
    """One monitor cycle over many accounts: one bulk read, then `risk_evaluate_snapshots`."""
    watched = [a if isinstance(a, WatchedAccount) else WatchedAccount.of(a) for a in accounts]
    known = [w for w in watched if w is not None]
    snapshots = read_accounts(gateway, [(w.login, w.server) for w in known])
    return risk_evaluate_snapshots(accounts=known, snapshots=snapshots, now=now)


def risk_evaluate_snapshots(
    *,
    accounts: Sequence[WatchedAccount],
    snapshots: Mapping[tuple[int, str], AccountSnapshot | Exception] | Reading,
    now: datetime | None = None,
) -> Outcome:
    """The rule table over a bulk read, touching the database only where something changed (state,
    a new breach) or the figures shown to people are due a refresh.

    The quiet path (the same policy version, the same state, no breach that is not already
    recorded) needs no lock and no transaction; everything else goes through
    `risk_evaluate_snapshot` with the account read afresh, under the row lock: a new breach at
    once, before the rest of the accounts are judged; a change of state after them."""
    now = now or timezone.now()
    rows = _risk_rows([w.pk for w in accounts])
    max_age = timedelta(milliseconds=settings.RISK_MAX_SNAPSHOT_AGE_MS)
    now_us = _micros(now)
    sample_period, figures_period = SAMPLE_EVERY // _MICROSECOND, figures_every() // _MICROSECOND
    refreshed: list[_Figures] = []
    samples: list[RiskSample] = []
    changed: list[tuple[int, AccountSnapshot]] = []
    evaluated = breaches = actions = 0

    def judge(found: dict[int, TradingAccount], mt5: AccountSnapshot, account_pk: int) -> None:
        nonlocal evaluated, breaches, actions
        current = found.get(account_pk)
        if current is None:
            return  # removed since the cycle began
        outcome = risk_evaluate_snapshot(account=current, mt5=mt5, now=now)
        evaluated += outcome.evaluated
        breaches += outcome.breaches
        actions += outcome.actions

    fresh = TradingAccount.objects.select_related("current_policy", "tenant")
    by_key = {(account.login, account.server): account for account in accounts}
    read = failed = 0
    failure: GatewayUnavailable | None = None
    for key, mt5 in snapshots.items() if isinstance(snapshots, Mapping) else snapshots:
        read += 1
        if isinstance(mt5, Exception):
            failed += 1
            failure = mt5 if isinstance(mt5, GatewayUnavailable) else failure
            continue
        account = by_key.get(key)
        if account is None or now - mt5.observed_at > max_age:
            continue  # a stale picture of the account must never close anyone's positions
        policy = account.policy
        row = rows.get(account.pk)
        if row is None or row.state.policy_version != policy.policy_version:
            changed.append((account.pk, mt5))
            continue
        evaluation = rules.evaluate(account_view(mt5), policy, row.state)
        if evaluation.breaches and any(
            (account.pk, b.rule_key, b.scope, policy.policy_version) not in _recorded for b in evaluation.breaches
        ):
            judge(fresh.in_bulk([account.pk]), mt5, account.pk)
            continue
        if evaluation.state is not row.state:
            changed.append((account.pk, mt5))
            continue
        evaluated += 1
        breaches += len(evaluation.breaches)
        if row.evaluated_at is None:
            sample = figures = True
        else:
            spread, last = _spread(account.pk), _micros(row.evaluated_at)
            sample = _slot_changed(spread, last, now_us, sample_period)
            figures = sample or _slot_changed(spread, last, now_us, figures_period)
        if figures:
            refreshed.append(
                _Figures(
                    row.pk,
                    row.version,
                    evaluation.measured,
                    mt5.balance,
                    mt5.equity,
                    evaluation.daily_floor,
                    evaluation.trading_block or "",
                    mt5.observed_at,
                )
            )
            if sample:
                samples.append(_sample(account.pk, mt5, evaluation))
    if failure is not None and failed == read:
        outages.note_failure(failure.message)  # every account unreadable: the terminal is gone
    elif failure is None:
        outages.note_success()
    if changed:
        current = fresh.in_bulk([pk for pk, _ in changed])
        for pk, mt5 in changed:
            judge(current, mt5, pk)
    if refreshed:
        _write_figures(refreshed, now)
    if samples:
        _write_samples(samples)
    return Outcome(evaluated > 0, breaches=breaches, actions=actions, reason=f"{evaluated} evaluated")


# RISK_RULES.md "close all positions and cancel pending orders": two fast-lane commands.
CLOSE_ALL_COMMANDS: tuple[tuple[str, dict[str, Any]], ...] = (
    (
        CommandType.CLOSE_POSITIONS,
        {
            "target": {"mode": "all_positions"},
            "execution": {"allow_partial_close": False, "close_only_profitable": False, "force_market": True},
        },
    ),
    (CommandType.CANCEL_ORDERS, {}),
)


def protective_action_raise(
    *, account: TradingAccount, breach: rules.Breach, snapshot: AccountSnapshot, policy: rules.Policy
) -> bool:
    """Record the breach once and start its action on the fast lane; False when already recorded."""
    position = next((p for p in snapshot.positions if p.ticket == breach.ticket), None) if breach.ticket else None
    action = ProtectiveAction(
        tenant_id=account.tenant_id,
        account=account,
        rule_key=breach.rule_key,
        scope=breach.scope,
        policy_version=policy.policy_version,
        action=breach.action,
        enabled=breach.enabled,
        hard=breach.hard,
        ticket=breach.ticket,
        symbol=position.symbol if position else "",
        volume=position.volume if position else None,
        floating_pnl=breach.measured if breach.ticket else snapshot.profit,
        equity=snapshot.equity,
        balance=snapshot.balance,
        threshold_used=breach.threshold_used,
        floor_or_limit=breach.floor_or_limit,
        measured=breach.measured,
        violation_count=breach.violation_count,
        detection_timestamp=snapshot.observed_at,
    )
    # Once the action is committed (here, or by an earlier evaluation), the monitor's quiet path
    # sees this breach again without a transaction.
    key = (account.pk, breach.rule_key, breach.scope, policy.policy_version)
    if len(_recorded) > 200_000:
        _recorded.clear()
    try:
        with transaction.atomic():
            action.save(force_insert=True)
    except IntegrityError:
        transaction.on_commit(lambda: _recorded.add(key))
        return False
    transaction.on_commit(lambda: _recorded.add(key))
    with context.scope(correlation_id=f"risk-{action.pk}", tenant=account.tenant.tenant_id, account=account.login):
        logger.warning("breach", extra={"rule_key": breach.rule_key, "scope": breach.scope, "enabled": breach.enabled})
        if not breach.enabled or breach.action == "none":
            _finish_without_command(action, policy)
            return True
        if breach.action == "close_position":
            specs = [(CommandType.CLOSE_POSITION, {"ticket": breach.ticket})]
        else:
            specs = list(CLOSE_ALL_COMMANDS)
        for index, (command_type, specific) in enumerate(specs):
            command = command_create(
                tenant=account.tenant,
                account=account,
                common={
                    "command_id": f"pa-{action.pk}-{index}",
                    "command_type": command_type,
                    "priority": Priority.CRITICAL,
                    "fast_lane": True,
                    "reason": f"{breach.rule_key}:{breach.scope}",
                    "expires_at_utc": None,
                },
                specific=specific,
                envelope={"raised_by": "risk_engine", "protective_action": action.pk},
                correlation_id=f"risk-{action.pk}",
                idempotency_key=f"protective-action-{action.pk}-{index}",
                source=Source.BRIDGE,
            )
            if index == 0:
                action.command = command
        action.save(update_fields=["command"])
    return True


def _finish_without_command(action: ProtectiveAction, policy: rules.Policy) -> None:
    if action.action == "none" and action.enabled:
        # The escalation acts by disabling trading, when the policy says so.
        status = (
            ProtectiveAction.Status.SUCCESS if policy.disable_trading_on_breach else ProtectiveAction.Status.SKIPPED
        )
        response = "trading disabled" if policy.disable_trading_on_breach else "disable_trading_on_breach is off"
    else:
        status = ProtectiveAction.Status.SKIPPED
        response = "enforcement flag is off: recorded, no action taken"
    action.execution_status = status
    action.mt5_response = response
    action.execution_timestamp = timezone.now()
    action.save(update_fields=["execution_status", "mt5_response", "execution_timestamp"])
    protective_action_report(action=action)


_STATUS_FOR_STATE = {
    "succeeded": ProtectiveAction.Status.SUCCESS,
    "partially_succeeded": ProtectiveAction.Status.PARTIAL,
}


def protective_action_complete(*, action: ProtectiveAction, command: Command) -> None:
    """The fast-lane command of an action finished: record what MT5 said and report it."""
    status = _STATUS_FOR_STATE.get(command.state, ProtectiveAction.Status.FAILED)
    result = command.result or {}
    positions = result.get("positions") or []
    closed = positions if positions else [result]
    closed_pnl = sum(
        (Decimal(str(p.get("profit") or "0")) for p in closed if p.get("status", "closed") == "closed"), Decimal(0)
    )
    action.execution_status = status
    action.execution_timestamp = command.finished_at
    action.positions = positions
    action.closed_pnl = closed_pnl
    action.mt5_response = f"{result.get('retcode_name', '')} {result.get('message', '')}".strip() or (
        "positions closed" if status == ProtectiveAction.Status.SUCCESS else ""
    )
    if status == ProtectiveAction.Status.SUCCESS and action.action == "close_position":
        action.mt5_response = "position closed successfully"
    action.error_message = command.error_message
    action.save()
    protective_action_report(action=action)


def report_payload(action: ProtectiveAction) -> dict[str, Any]:
    """The panel's protective_action_report payload, plus violation_count and positions."""
    payload: dict[str, Any] = {
        "rule_key": action.rule_key,
        "policy_version": action.policy_version,
        "position_id": str(action.ticket) if action.ticket else None,
        "ticket": action.ticket,
        "symbol": action.symbol or None,
        "volume": float(action.volume) if action.volume is not None else None,
        "floating_pnl": float(action.floating_pnl) if action.floating_pnl is not None else None,
        "closed_pnl": float(action.closed_pnl),
        "equity": float(action.equity),
        "balance": float(action.balance),
        "threshold_used": float(action.threshold_used),
        "detection_timestamp": utc_iso(action.detection_timestamp),
        "execution_timestamp": utc_iso(action.execution_timestamp) if action.execution_timestamp else None,
        "execution_status": action.execution_status,
        "mt5_response": action.mt5_response,
        "error_message": action.error_message or None,
        "violation_count": action.violation_count,
    }
    if action.action == "close_all":
        payload["positions"] = jsonable(action.positions)
    return payload


def protective_action_report(*, action: ProtectiveAction) -> None:
    """Write the report to the outbox, in the caller's transaction."""
    from callbacks.services import callback_enqueue

    callback_enqueue(
        tenant=action.tenant,
        account=action.account,
        request_type="protective_action_report",
        payload=report_payload(action),
        idempotency_key=f"protective-action-{action.pk}",
        correlation_id=f"risk-{action.pk}",
        session_id="risk-engine",
        correlation_group="protective-action",
        source_kind="protective_action",
        source_id=str(action.pk),
    )


def open_position_guard(account: TradingAccount) -> tuple[str, str] | None:
    """The executor's guard: a breach that disables trading rejects new positions."""
    snapshot = account.current_policy
    row = AccountRisk.objects.filter(account=account).first()
    if snapshot is None or row is None or row.policy_version != snapshot.policy_version:
        return None
    block = rules.open_position_block(policy_of(snapshot), state_from_row(row), timezone.now())
    if block == "trading_disabled":
        return "trading_disabled", "Trading is disabled after a risk breach."
    return None
