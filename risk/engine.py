"""The risk engine: evaluate an account against its policy, persist the state, act on breaches.

Pure rules live in `risk.rules`; this module is the I/O around them: which accounts are
watched, their parsed policies, evaluating snapshots and persisting the state. The bulk
statements are in `risk.sql`, and what a breach sets off (the protective action) in
`risk.protection`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, cast

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Max, QuerySet, Sum
from django.utils import timezone

from bridgeproject.jsonutil import jsonable
from execution import outages
from execution.gateway import AccountSnapshot, Gateway, GatewayUnavailable
from policies.models import AccountRisk, PolicySnapshot, RiskSample, TradingAccount
from risk import protection, rules, server_side, sql
from risk.ahead import Judged, SendAhead

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


def state_from_row(row: AccountRisk) -> rules.RiskState:
    return rules.RiskState(
        policy_version=row.policy_version,
        initial_balance=row.initial_balance,
        high_water_mark=row.high_water_mark,
        total_floor=row.total_floor,
        daily_reference=row.daily_reference,
        daily_reference_date=row.daily_reference_date,
        # A plain CharField in the table; only _state_to_row writes it, from a RiskState.
        daily_reference_source=cast(rules.ReferenceSource, row.daily_reference_source),
        violation_count=row.violation_count,
        breached_tickets=frozenset(row.breached_tickets),
        hard_breached=row.hard_breached,
        trading_disabled_until=row.trading_disabled_until,
        last_trading_day=row.last_trading_day,
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
    row.last_trading_day = state.last_trading_day


def risk_state_apply_policy(*, account: TradingAccount, snapshot: PolicySnapshot) -> AccountRisk:
    """Bring the durable state to a new policy version at once (called in the snapshot's transaction)."""
    policy = policy_of(snapshot)
    row = AccountRisk.objects.select_for_update().filter(account=account).first()
    old = state_from_row(row) if row is not None else None
    try:
        state = rules.RiskState.apply_policy(old, policy)
    except rules.StalePolicyError:
        # Only a stored state can be newer than the policy: the row exists.
        return cast(AccountRisk, row)
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
                ticket=p.ticket,
                symbol=p.symbol,
                volume=p.volume,
                profit=p.profit,
                swap=p.swap,
                commission=p.commission,
                opened_at=p.opened_at,
                sl=p.sl,
            )
            for p in snapshot.positions
        ),
        observed_at=snapshot.observed_at,
        orders=tuple((o.ticket, o.placed_at) for o in snapshot.orders),
        currency_digits=snapshot.currency_digits,
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
        view = account_view(mt5)
        evaluation = rules.evaluate(view, policy, state)
        if evaluation.state is not state:
            _state_to_row(evaluation.state, row)
        last_evaluated = row.evaluated_at
        _figures(row, mt5, evaluation, now)
        row.save()
        if evaluation.breaches or _due(account.pk, last_evaluated, now, SAMPLE_EVERY):
            _sample(account.pk, mt5, evaluation).save()
        open_actions = protection.open_actions_of([account.pk]).get(account.pk, [])
        found = [*evaluation.breaches, *protection.enforcement(account.pk, view, evaluation, open_actions)]
        actions = sum(
            1
            for breach in found
            if protection.protective_action_raise(account=account, breach=breach, snapshot=mt5, policy=policy)
        )
    if open_actions:
        actions += protection.pursue(account=account, actions=open_actions, snapshot=mt5, now=now)
    return Outcome(True, breaches=len(found), actions=actions)


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


Reading = Iterable[tuple[tuple[int, str], AccountSnapshot | Exception]]


def read_accounts(gateway: Gateway, keys: list[tuple[int, str]]) -> Reading:
    """The accounts' MT5 snapshots in `keys` order. A gateway that can hand them over one by one
    (read together, each converted when its turn comes) lets the monitor act on a breach without
    waiting for every other account's conversion first."""
    stream: Callable[[list[tuple[int, str]]], Reading] | None = getattr(gateway, "account_snapshots_stream", None)
    if stream is not None:
        return stream(keys)
    return gateway.account_snapshots(keys).items()


def risk_evaluate_many(
    *, accounts: Sequence[TradingAccount | WatchedAccount], gateway: Gateway, now: datetime | None = None
) -> Outcome:
    """One monitor cycle over many accounts: one bulk read, then `risk_evaluate_snapshots`."""
    watched = [a if isinstance(a, WatchedAccount) else WatchedAccount.of(a) for a in accounts]
    known = [w for w in watched if w is not None]
    snapshots = read_accounts(gateway, [(w.login, w.server) for w in known])
    if not gateway.server_side_trading:
        return risk_evaluate_snapshots(accounts=known, snapshots=snapshots, now=now)
    held = dict(snapshots)
    outcome = risk_evaluate_snapshots(accounts=known, snapshots=held, now=now)
    server_side.server_trading_sync(gateway=gateway, accounts=known, snapshots=held, now=now)
    return outcome


def risk_evaluate_snapshots(
    *,
    accounts: Sequence[WatchedAccount],
    snapshots: Mapping[tuple[int, str], AccountSnapshot | Exception] | Reading,
    now: datetime | None = None,
    ahead: SendAhead | None = None,
) -> Outcome:
    """The rule table over a bulk read, touching the database only where something changed (state,
    a new breach) or the figures shown to people are due a refresh.

    The quiet path (the same policy version, the same state, no breach that is not already
    recorded) needs no lock and no transaction; everything else goes through
    `risk_evaluate_snapshot` with the account read afresh, under the row lock: a new breach at
    once, before the rest of the accounts are judged; a change of state after them.

    ``ahead``: the snapshots were read just now through their terminals' owners (the polling
    monitor's own read): a new breach whose goal is a close is closed before it is recorded
    (``risk.ahead``), and its action recorded under the id its closes carry."""
    now = now or timezone.now()
    rows = sql.risk_rows([w.pk for w in accounts])
    pursued = protection.open_actions_of([w.pk for w in accounts])
    to_pursue: list[tuple[int, AccountSnapshot]] = []
    max_age = timedelta(milliseconds=settings.RISK_MAX_SNAPSHOT_AGE_MS)
    now_us = _micros(now)
    sample_period, figures_period = SAMPLE_EVERY // _MICROSECOND, figures_every() // _MICROSECOND
    refreshed: list[sql.Figures] = []
    samples: list[RiskSample] = []
    changed: list[tuple[int, AccountSnapshot]] = []
    evaluated = breaches = actions = 0

    def judge(found: dict[int, TradingAccount], mt5: AccountSnapshot, account_pk: int) -> None:
        nonlocal evaluated, breaches, actions
        current = found.get(account_pk)
        if current is None:
            return  # removed since the cycle began
        try:
            outcome = risk_evaluate_snapshot(account=current, mt5=mt5, now=now)
        except Exception:  # one account's failure never holds up the others' protection
            logger.exception("evaluation failed", extra={"account": current.login})
            return
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
        view = account_view(mt5)
        evaluation = rules.evaluate(view, policy, row.state)
        found = (
            *evaluation.breaches,
            *protection.enforcement(account.pk, view, evaluation, pursued.get(account.pk, ())),
        )
        if found and any(
            not protection.is_recorded((account.pk, b.rule_key, b.scope, policy.policy_version)) for b in found
        ):
            sent = (
                []
                if ahead is None
                else ahead.send([Judged(account.pk, account.login, account.server, policy, mt5, found)])
            )
            try:
                judge(fresh.in_bulk([account.pk]), mt5, account.pk)  # pursues its open actions too
            finally:
                if ahead is not None:
                    ahead.settle(sent)
            continue
        if evaluation.state is not row.state:
            changed.append((account.pk, mt5))
            continue
        if account.pk in pursued:
            to_pursue.append((account.pk, mt5))
        evaluated += 1
        breaches += len(found)
        if row.evaluated_at is None:
            sample = figures = True
        else:
            spread, last = _spread(account.pk), _micros(row.evaluated_at)
            sample = _slot_changed(spread, last, now_us, sample_period)
            figures = sample or _slot_changed(spread, last, now_us, figures_period)
        if figures:
            refreshed.append(
                sql.Figures(
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
    if to_pursue:
        current = fresh.in_bulk([pk for pk, _ in to_pursue])
        for pk, mt5 in to_pursue:
            if pk not in current:
                continue
            try:
                actions += protection.pursue(account=current[pk], actions=pursued[pk], snapshot=mt5, now=now)
            except Exception:  # one account's failure never holds up the others' protection
                logger.exception("protective goal check failed", extra={"account": current[pk].login})
    if refreshed:
        sql.write_figures(refreshed, now)
    if samples:
        sql.write_samples(samples)
    return Outcome(evaluated > 0, breaches=breaches, actions=actions, reason=f"{evaluated} evaluated")


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


def _has_pre_trade_limits(policy: rules.Policy, payload: dict[str, Any]) -> bool:
    t = policy.thresholds
    return (
        t.require_stop_loss
        or t.max_position_volume is not None
        or t.max_open_positions is not None
        or t.max_total_volume is not None
        or (t.single_trade_threshold is not None and bool(payload.get("stop_loss")))
    )


def open_position_limits(
    account: TradingAccount, payload: dict[str, Any], gateway: Gateway
) -> tuple[str, str, dict[str, Any]] | None:
    """The executor's pre-trade check (RISK_RULES v2 "More rules"): an open_position that would
    break a limit of the policy is rejected before MT5 with `risk_limit_exceeded`, the rule, the
    numbers and the limit in its result. MT5 is read only when the policy has such a limit."""
    snapshot = account.current_policy
    if snapshot is None:
        return None
    policy = policy_of(snapshot)
    if not _has_pre_trade_limits(policy, payload):
        return None
    order = rules.OrderView(
        symbol=payload["symbol"],
        direction=payload["direction"],
        volume=Decimal(str(payload["volume"])),
        price=_decimal_or_none(payload.get("open_price")),
        stop_loss=_decimal_or_none(payload.get("stop_loss")),
    )
    t = policy.thresholds
    # MT5 is read for what the policy's limits need, no more: the account for the count and the
    # open volume, the symbol for the loss at a stop (an open without a stop risks nothing here).
    if t.max_open_positions is not None or t.max_total_volume is not None:
        view = account_view(gateway.account_snapshot(account.login, account.server))
    else:
        view = rules.AccountView(
            login=account.login, balance=Decimal(0), equity=Decimal(0), positions=(), observed_at=timezone.now()
        )
    symbol = None
    if order.stop_loss and t.single_trade_threshold is not None:
        info = gateway.symbol_info(account.login, account.server, order.symbol)
        if info is not None:
            symbol = rules.SymbolView(tick_size=info.tick_size, tick_value=info.tick_value, bid=info.bid, ask=info.ask)
    adds_to = None
    if t.max_open_positions is not None or t.max_position_volume is not None:
        held = gateway.netting_position(account.login, account.server, order.symbol)
        if held is not None and held.side == order.direction:
            adds_to = next((p for p in view.positions if p.ticket == held.ticket), None) or rules.PositionView(
                ticket=held.ticket,
                symbol=held.symbol,
                volume=held.volume,
                profit=held.profit,
                swap=held.swap,
                commission=held.commission,
            )
    return _refused(rules.open_position_check(order, view, policy, symbol, adds_to), policy)


def modify_position_limits(
    account: TradingAccount, payload: dict[str, Any], gateway: Gateway
) -> tuple[str, str, dict[str, Any]] | None:
    """The executor's check before a modify_position: one that would leave the position without a
    stop loss where the policy requires one is rejected with `risk_limit_exceeded`, as an open
    without one is. `stop_loss: 0` removes the stop; without `stop_loss` (or null) the position
    keeps its own, read from MT5 only then (a position MT5 no longer holds is MT5's to answer)."""
    snapshot = account.current_policy
    if snapshot is None:
        return None
    policy = policy_of(snapshot)
    if not policy.thresholds.require_stop_loss:
        return None
    ticket = int(payload["ticket"])
    stop_loss = _decimal_or_none(payload.get("stop_loss"))
    if stop_loss is None:
        held = gateway.account_snapshot(account.login, account.server).positions
        position = next((p for p in held if p.ticket == ticket), None)
        if position is None:
            return None
        stop_loss = position.sl
    return _refused(rules.modify_position_check(policy, ticket, stop_loss), policy)


def _refused(rejection: rules.Rejection | None, policy: rules.Policy) -> tuple[str, str, dict[str, Any]] | None:
    """A pre-trade rejection as the executor takes it: `risk_limit_exceeded`, the message, and the
    rule, numbers and limit for the command's result."""
    if rejection is None:
        return None
    result = jsonable(
        {
            "rule_key": rejection.rule_key,
            "measured": rejection.measured,
            "limit": rejection.limit,
            "policy_version": policy.policy_version,
            "explanation": rejection.explanation,
        }
    )
    return "risk_limit_exceeded", f"{rejection.rule_key}: {rejection.message}", result


def _decimal_or_none(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))
