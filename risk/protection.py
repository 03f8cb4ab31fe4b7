"""Protective actions: a breach's goal, pursued until it holds on MT5 (RISK_RULES.md "Enforcement
that holds"), and reported to Laravel through the callback outbox.

- A breach is recorded once: exactly one action per (account, rule, scope, policy_version) is
  guaranteed by a unique constraint, so repeated evaluations, restarts and several monitors can
  all see the same breach.
- The action has a goal: the position closed, an order cancelled, the account flat (no
  positions, no pending orders), or trading disabled. Its fast-lane commands are *attempts*:
  when one ends (succeeded, failed, expired, answer lost) nothing is concluded from the command;
  the next MT5 snapshot read after it ended says whether the goal holds. A close that filled is
  therefore a success however its command ended, a position the server closed itself (SL, TP,
  stop-out) counts as closed, and a partial fill or a position opened meanwhile is met by
  another attempt under the same action, until the goal holds.
- Laravel hears of an action when its first attempt ends and again each time its outcome
  changes, and when the goal is late (PROTECTION_ALERT_SECONDS), each report with the action's
  stable `action_id` and its `report_sequence`; the last report states the final outcome.
"""

from __future__ import annotations

import copy
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import Max, Q
from django.utils import timezone

from alerts.models import Alert
from alerts.services import alert_raise
from bridgeproject import context
from bridgeproject.dbutil import insert_unless, insert_unless_conflicting, prepared_cursor
from bridgeproject.jsonutil import callback_numbers, decimal_number, jsonable, utc_iso
from callbacks.services import callback_enqueue
from commands.models import BRIDGE_COMMAND_ID_PREFIX, Command, CommandType, Priority, Source
from commands.services import command_create
from commands.states import ACTIVE
from execution import dispatch
from execution.gateway import AccountSnapshot, order_tag
from policies.models import ProtectiveAction, SentAheadNote, TradingAccount
from risk import rules

logger = logging.getLogger("bridge.risk")

Goal = ProtectiveAction.Goal
Status = ProtectiveAction.Status

# The goal each action pursues (an escalation without a close acts by disabling trading).
GOAL_OF_ACTION: dict[str, str] = {
    "close_position": Goal.POSITION_CLOSED,
    "reduce_position": Goal.POSITION_REDUCED,
    "report": Goal.NONE,
    "cancel_order": Goal.ORDER_CANCELLED,
    "close_all": Goal.ACCOUNT_FLAT,
    "none": Goal.TRADING_DISABLED,
}
# What a report says once the goal holds (the panel's wording for a close).
GOAL_MET: dict[str, str] = {
    Goal.POSITION_CLOSED: "position closed successfully",
    Goal.POSITION_REDUCED: "position reduced to the volume allowed",
    Goal.ORDER_CANCELLED: "order cancelled",
    Goal.ACCOUNT_FLAT: "account flat: every position closed, every pending order cancelled",
    Goal.TRADING_DISABLED: "trading disabled",
}
# What makes an account flat: every position closed at market, every pending order cancelled (the
# close-all of a protective action, and of the panel's "Close all and disable" kill switch).
CLOSE_ALL_SPECS: tuple[tuple[str, dict[str, Any]], tuple[str, dict[str, Any]]] = (
    (
        CommandType.CLOSE_POSITIONS,
        {
            "target": {"mode": "all_positions"},
            "execution": {"allow_partial_close": False, "close_only_profitable": False, "force_market": True},
        },
    ),
    (CommandType.CANCEL_ORDERS, {}),
)
# The commands that close positions (a protective close sent ahead is theirs to reconcile with).
CLOSING_COMMANDS = (CommandType.CLOSE_POSITION, CommandType.CLOSE_POSITIONS)
# The bridge's own command ids (PROTOCOL.md §9 "Command ids"): refused on intake, so nothing a
# tenant sends can take one.
COMMAND_ID_PREFIX = f"{BRIDGE_COMMAND_ID_PREFIX}pa-"
# Between attempts that did not reach the goal: 0.5 s, doubling, at most 10 s.
FIRST_RETRY_SECONDS, MAX_RETRY_SECONDS = 0.5, 10.0

_ACTION_FIELDS = [f for f in ProtectiveAction._meta.concrete_fields if not f.primary_key]
# (account, rule_key, scope, policy_version) of breaches whose protective action is committed:
# seeing one again needs no transaction (the unique constraint would refuse it anyway).
_recorded: set[tuple[int, str, str, int]] = set()


@dataclass(frozen=True)
class SentAhead:
    """Closes a risk monitor sent before the breach's action was recorded (``risk.ahead``: the
    event monitor from the Manager API's pumped picture, docs/manager-api.md "Acting before
    recording"; the polling monitor through a terminal's owner). The action takes
    ``action_id`` when given: the closes carry its first close command's tag
    (``first_close_tag``). That command, and the first of any other action raised with it on the
    same positions, reconciles with them (``sent_ahead`` in its envelope) instead of sending
    again: a close that filled is found by its tag, and one whose answer had not come is waited
    for until ``until`` (a lost answer, reconciled by tag) before anything is sent for it."""

    action_id: uuid.UUID | None
    tag: str
    sent_at: datetime
    until: datetime
    tickets: tuple[int, ...]
    in_flight: Callable[[], tuple[int, ...]]  # the tickets whose close has no final answer yet

    def envelope(self) -> dict[str, Any]:
        return {
            "tag": self.tag,
            "sent_at": self.sent_at.isoformat(),
            "until": self.until.isoformat(),
            "tickets": list(self.tickets),
            "in_flight": list(self.in_flight()),
        }


# The closes sent ahead, by the breach they were sent for, while the monitor records it.
_sent_ahead: dict[tuple[int, str, str, int], SentAhead] = {}


def first_close_tag(action_id: uuid.UUID) -> str:
    """The MT5 tag of an action's first close command (attempt 1, its first command)."""
    return order_tag(f"{COMMAND_ID_PREFIX}{action_id.hex}-1-0")


def goal_of(breach: rules.Breach, policy: rules.Policy) -> str:
    """The goal the breach's action will pursue."""
    return _goal_of(breach, policy)


def accounts_with_actions(account_pks: Sequence[int], breaches: Sequence[tuple[int, str, str, int]]) -> set[int]:
    """The accounts with a protective action still pursuing its goal, or with one of ``breaches``
    already recorded (one query): a close sent ahead there could meet another attempt's."""
    if not account_pks:
        return set()
    recorded = Q()
    for pk, rule_key, scope, version in breaches:
        recorded |= Q(account_id=pk, rule_key=rule_key, scope=scope, policy_version=version)
    pursuing = Q(goal_met_at__isnull=True) & ~Q(goal=Goal.NONE)
    found = ProtectiveAction.objects.filter(Q(account_id__in=account_pks) & (pursuing | recorded))
    return set(found.values_list("account_id", flat=True).distinct())


def sent_ahead_hold(key: tuple[int, str, str, int], ahead: SentAhead) -> None:
    _sent_ahead[key] = ahead


def sent_ahead_release(key: tuple[int, str, str, int]) -> None:
    _sent_ahead.pop(key, None)


# What a note keeps of the breach: the action's figures (``_action_of``), as the action records them.
_NOTED = (
    "action",
    "enabled",
    "hard",
    "ticket",
    "symbol",
    "volume",
    "floating_pnl",
    "equity",
    "balance",
    "threshold_used",
    "floor_or_limit",
    "measured",
    "violation_count",
    "detection_timestamp",
    "goal",
    "explanation",
)
_NOTE_FIELDS = [f for f in SentAheadNote._meta.concrete_fields if not f.primary_key]


def sent_ahead_note(
    *,
    account_pk: int,
    breach: rules.Breach,
    snapshot: AccountSnapshot,
    policy: rules.Policy,
    action_id: uuid.UUID,
    tag: str,
    tickets: Sequence[int],
    sent_at: datetime,
    sharing: Sequence[rules.Breach] = (),
    breaches: Sequence[tuple[int, str, str, int]] = (),
) -> bool:
    """Write the note of closes about to be sent ahead for the breach (``SentAheadNote``): should
    their action never be recorded, the sweeper records it from the note. Only when the account
    has no protective action pursuing its goal and none of ``breaches`` (the picture's, by key)
    is recorded (``accounts_with_actions``): a close sent ahead there could meet another
    attempt's. ``sharing``: the account's other breaches of the same picture whose goals the
    same closes meet (a flat close's single-trade breaches), kept in the note's figures under
    ``sharing`` so that the sweeper records theirs too. False when it was not written (the
    account is busy, or the database is away): then nothing is sent ahead.

    On PostgreSQL outside a transaction, the check and the note are one statement, and its
    commit does not wait for the WAL to reach the disk: the note must outlive this process, not
    a crash of PostgreSQL itself, and the flush was most of the send's p99 (PostgreSQL writes it
    out within 3 × wal_writer_delay, 600 ms). That is one round trip where the check, BEGIN,
    SET LOCAL, the insert and COMMIT took five."""
    figures = _figures_of(_action_of(account_pk, breach, snapshot, policy))
    if sharing:
        figures["sharing"] = [
            {
                "rule_key": other.rule_key,
                "scope": other.scope,
                "figures": _figures_of(_action_of(account_pk, other, snapshot, policy)),
            }
            for other in sharing
        ]
    note = SentAheadNote(
        action_id=action_id,
        account_id=account_pk,
        rule_key=breach.rule_key,
        scope=breach.scope,
        policy_version=policy.policy_version,
        figures=figures,
        tag=tag,
        tickets=list(tickets),
        sent_at=sent_at,
    )
    keys = [key for key in breaches if key[0] == account_pk]
    try:
        if connection.vendor == "postgresql" and not connection.in_atomic_block:
            params = [account_pk, Goal.NONE, [k[1] for k in keys], [k[2] for k in keys], [k[3] for k in keys]]
            written = insert_unless(note, _NOTE_FIELDS, unless=_BUSY_SQL, params=params, asynchronous_commit=True)
            return written is not None
        if accounts_with_actions([account_pk], keys):
            return False
        return insert_unless_conflicting(note, _NOTE_FIELDS) is not None
    except Exception:  # the database is away: the engine's own path, as before
        logger.exception("risk monitor: the note of a close sent ahead could not be written")
        return False


# ``accounts_with_actions`` for one account, as the note's condition (params: the account, the goal
# none, and the breaches' rule keys, scopes and policy versions as three arrays).
_BUSY_SQL = (
    f'SELECT 1 FROM "{ProtectiveAction._meta.db_table}" a WHERE a."account_id" = %s AND '  # noqa: S608
    '((a."goal_met_at" IS NULL AND a."goal" <> %s) OR (a."rule_key", a."scope", a."policy_version") IN '
    "(SELECT * FROM unnest(CAST(%s AS text[]), CAST(%s AS text[]), CAST(%s AS integer[]))))"
)


def warm_up() -> None:
    """Open this thread's database connection and read the tables a close sent ahead reads and
    writes first (the note's check of the account's actions, the note), so that the first breach after a start or
    a resync does not pay for them: a connect, and PostgreSQL loading each table's catalog entries
    on its first use in a connection, cost a breach's send ~20 ms. Never raises."""
    try:
        if connection.vendor == "postgresql":
            with prepared_cursor() as cursor:
                cursor.execute(_BUSY_SQL, [0, Goal.NONE, [], [], []])
        else:
            accounts_with_actions([0], [(0, "", "", 0)])
        SentAheadNote.objects.filter(action_id=uuid.UUID(int=0)).exists()
    except DatabaseError:
        logger.warning("risk: warming the database connection up failed", exc_info=True)


def sent_ahead_unnote(action_id: uuid.UUID) -> None:
    """Nothing was sent ahead after all: the note goes."""
    SentAheadNote.objects.filter(action_id=action_id).delete()


def _figures_of(action: ProtectiveAction) -> dict[str, Any]:
    return {name: _noted(getattr(action, name)) for name in _NOTED}


def _noted(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def sent_ahead_recover(*, now: datetime | None = None) -> int:
    """Record the actions of closes sent ahead whose record never came (the monitor died between
    the close and its record, or the engine judged otherwise): every note older than
    ``SENT_AHEAD_RECOVER_SECONDS`` becomes its action, under the id its closes' tag carries,
    reported to Laravel like any other and raised as an alert. Its first attempt's command finds
    the closes by their tag, and its goal is then pursued as any open action's is. A note
    whose breach is recorded already (under that id, or another) just goes. Returns the actions
    recorded."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.SENT_AHEAD_RECOVER_SECONDS)
    recovered = 0
    for pk in SentAheadNote.objects.filter(sent_at__lt=cutoff).order_by("pk").values_list("pk", flat=True):
        with transaction.atomic():
            note = (
                SentAheadNote.objects.select_for_update(skip_locked=True, of=("self",))
                .select_related("account__tenant")
                .filter(pk=pk)
                .first()
            )
            if note is None:
                continue  # recovered meanwhile (another sweeper)
            note.delete()
            recovered += _recover(note, now)
    return recovered


def _recovered_breaches(note: SentAheadNote) -> list[tuple[uuid.UUID, str, str, dict[str, Any]]]:
    """(action id, rule_key, scope, figures) of the note's breach and of those that shared its
    closes, each not recorded yet (under its id, or another)."""
    sharing = [
        (uuid.uuid4(), str(other["rule_key"]), str(other["scope"]), other["figures"])
        for other in note.figures.get("sharing") or ()
    ]
    found = []
    for action_id, rule_key, scope, figures in [(note.action_id, note.rule_key, note.scope, note.figures), *sharing]:
        recorded = ProtectiveAction.objects.filter(
            Q(action_id=action_id)
            | Q(account_id=note.account_id, rule_key=rule_key, scope=scope, policy_version=note.policy_version)
        ).exists()
        if not recorded:
            found.append((action_id, rule_key, scope, figures))
    return found


def _recover(note: SentAheadNote, now: datetime) -> int:
    """Record the note's breach (under the id its closes' tag carries) and those that shared its
    closes, each with its first attempt; report each; raise one alert. Returns the actions recorded."""
    account = note.account
    fields = {f.attname: f for f in ProtectiveAction._meta.concrete_fields}
    # Its first attempt's close command finds the closes sent ahead by their tag (their deals and
    # realised profit, as any command's reconciliation does) and sends only for a position none
    # of them closed (a request lost on its way); the goal is then held against MT5 as any
    # action's is. The breaches that shared the closes reconcile with the same tag.
    ahead = SentAhead(
        action_id=note.action_id,
        tag=note.tag,
        sent_at=note.sent_at,
        until=note.sent_at,  # their answers are long due: nothing is waited for
        tickets=tuple(note.tickets),
        in_flight=tuple,
    )
    positions = ", ".join(str(t) for t in note.tickets) or "none"
    recorded: list[ProtectiveAction] = []
    for action_id, rule_key, scope, noted in _recovered_breaches(note):
        figures = {name: fields[name].to_python(value) for name, value in noted.items() if name in fields}
        action = ProtectiveAction(
            action_id=action_id,
            tenant_id=account.tenant_id,
            account=account,
            rule_key=rule_key,
            scope=scope,
            policy_version=note.policy_version,
            mt5_response=(
                f"closed ahead by the risk monitor at {utc_iso(note.sent_at)} (tag {note.tag}, "
                f"positions {positions}); its record was recovered"
            ),
            created_at=now,
            **figures,
        )
        action.pk = insert_unless_conflicting(action, _ACTION_FIELDS)
        if action.pk is None:
            continue
        action._state.adding = False
        recorded.append(action)
        with context.scope(correlation_id=_correlation(action), tenant=account.tenant.tenant_id, account=account.login):
            if not _flattened_by_another(action):
                _attempt(action, account, None, ahead)
            logger.error(
                "a protective close sent ahead had no record: recovered",
                extra={"action_id": str(action.action_id), "tag": note.tag, "tickets": note.tickets},
            )
            protective_action_report(action=action)
    if not recorded:
        return 0
    first = recorded[0]
    breaches = "; ".join(
        f"{a.rule_key} ({a.scope}, policy v{a.policy_version}) breached at {utc_iso(a.detection_timestamp)}"
        for a in recorded
    )
    with context.scope(correlation_id=_correlation(first), tenant=account.tenant.tenant_id, account=account.login):
        alert_raise(
            kind=Alert.Kind.CLOSE_RECOVERED,
            subject=f"action:{first.action_id}",
            title=f"Account {account.login}: the record of a protective close sent ahead was recovered",
            body=(
                f"{breaches}. The risk monitor sent the close(s) at {utc_iso(note.sent_at)} under tag "
                f"{note.tag} (positions {positions}) but no action recorded them (the monitor stopped "
                "before its record, or the engine judged otherwise). The action"
                f"{'s are' if len(recorded) > 1 else ' is'} now recorded and reported; each goal is held "
                "against MT5 as any other's."
            ),
            tenant_id=account.tenant.tenant_id,
        )
    return len(recorded)


def is_recorded(key: tuple[int, str, str, int]) -> bool:
    """Whether this process has seen the breach's action committed."""
    return key in _recorded


def goal_holds(action: ProtectiveAction, snapshot: AccountSnapshot, account: TradingAccount) -> bool:
    """Whether MT5 (this snapshot) shows the action's goal reached."""
    if action.goal == Goal.POSITION_CLOSED:
        return all(p.ticket != action.ticket for p in snapshot.positions)
    if action.goal == Goal.POSITION_REDUCED:
        return all(p.ticket != action.ticket or p.volume <= action.floor_or_limit for p in snapshot.positions)
    if action.goal == Goal.ORDER_CANCELLED:
        return all(o.ticket != action.ticket for o in snapshot.orders)
    if action.goal == Goal.ACCOUNT_FLAT:
        return not snapshot.positions and not snapshot.orders
    if action.goal == Goal.TRADING_DISABLED:
        return True  # the bridge refuses new positions from the moment the breach is recorded
    return True


def open_actions_of(account_pks: Sequence[int]) -> dict[int, list[ProtectiveAction]]:
    """The actions whose goal is still open, by account (one query on a partial index)."""
    pursued: dict[int, list[ProtectiveAction]] = {}
    if not account_pks:
        return pursued
    queryset = ProtectiveAction.objects.filter(account_id__in=account_pks, goal_met_at__isnull=True).exclude(
        goal=Goal.NONE
    )
    for action in queryset.order_by("pk"):
        pursued.setdefault(action.account_id, []).append(action)
    return pursued


# The breaches that disable trading: what appears on the account after one of them is closed.
BLOCKING_RULES = ("daily_drawdown", "total_drawdown", "single_trade_loss_limit")


def enforcement(
    account_pk: int, view: rules.AccountView, evaluation: rules.Evaluation, open_actions: Sequence[ProtectiveAction]
) -> tuple[rules.Breach, ...]:
    """`rules.enforcement` for an account whose trading is disabled: what appeared since the
    breach that disabled it. Left to an open action already making the account flat (it closes
    the same positions); no query unless trading is disabled and something is open."""
    if evaluation.trading_block != "trading_disabled" or not (view.positions or view.orders):
        return ()
    if any(a.goal == Goal.ACCOUNT_FLAT for a in open_actions):
        return ()
    since = (
        ProtectiveAction.objects.filter(account_id=account_pk, rule_key__in=BLOCKING_RULES)
        .order_by("-detection_timestamp")
        .values_list("detection_timestamp", flat=True)
        .first()
    )
    return () if since is None else rules.enforcement(view, evaluation, since)


def protective_action_raise(
    *, account: TradingAccount, breach: rules.Breach, snapshot: AccountSnapshot, policy: rules.Policy
) -> bool:
    """Record the breach once and start pursuing its goal; False when already recorded."""
    key = (account.pk, breach.rule_key, breach.scope, policy.policy_version)
    ahead = _sent_ahead.get(key)
    action = _action_of(account.pk, breach, snapshot, policy)
    action.tenant_id, action.account = account.tenant_id, account
    if ahead is not None and ahead.action_id is not None:
        action.action_id = ahead.action_id  # the tag its closes already carry
        # Recorded now (or by another evaluation): the note written before the closes is done.
        SentAheadNote.objects.filter(action_id=ahead.action_id).delete()
    # Once the action is committed (here, or by an earlier evaluation), the monitor's quiet path
    # sees this breach again without a transaction.
    if len(_recorded) > 200_000:
        _recorded.clear()
    # INSERT ... ON CONFLICT DO NOTHING RETURNING id: one round trip where a savepoint took three,
    # and a breach recorded already (an earlier evaluation, another monitor) leaves the
    # transaction intact.
    action.pk = insert_unless_conflicting(action, _ACTION_FIELDS)
    transaction.on_commit(lambda: _recorded.add(key))
    if action.pk is None:
        return False
    action._state.adding = False
    with context.scope(correlation_id=_correlation(action), tenant=account.tenant.tenant_id, account=account.login):
        logger.warning("breach", extra={"rule_key": breach.rule_key, "scope": breach.scope, "enabled": breach.enabled})
        if breach.hard or breach.rule_key in ALERTED_RULES:
            _alert_breach(action, account)
        if action.goal in (Goal.NONE, Goal.TRADING_DISABLED):
            _finish_without_command(action, policy)
        elif not _flattened_by_another(action):
            _attempt(action, account, snapshot, ahead)
    return True


def _action_of(
    account_pk: int, breach: rules.Breach, snapshot: AccountSnapshot, policy: rules.Policy
) -> ProtectiveAction:
    """The breach's action as recorded (unsaved, without its tenant)."""
    position = next((p for p in snapshot.positions if p.ticket == breach.ticket), None) if breach.ticket else None
    action = ProtectiveAction(
        account_id=account_pk,
        rule_key=breach.rule_key,
        scope=breach.scope,
        policy_version=policy.policy_version,
        action=breach.action,
        enabled=breach.enabled,
        hard=breach.hard,
        ticket=breach.ticket,
        symbol=position.symbol if position else "",
        volume=position.volume if position else None,
        # The position's own profit + swap + commission (what a rule measured may be a count or
        # lots: max_open_positions, max_position_volume); the account's for account-wide actions.
        floating_pnl=position.profit + position.swap + position.commission if position else snapshot.profit,
        equity=snapshot.equity,
        balance=snapshot.balance,
        threshold_used=breach.threshold_used,
        floor_or_limit=breach.floor_or_limit,
        measured=breach.measured,
        violation_count=breach.violation_count,
        detection_timestamp=snapshot.observed_at,
        goal=_goal_of(breach, policy),
        explanation=jsonable(breach.explanation or {}),
    )
    return action


# Breaches of the whole account operators hear of at once (a single trade's loss is the engine's routine work).
ALERTED_RULES = ("daily_drawdown", "total_drawdown")


def _alert_breach(action: ProtectiveAction, account: TradingAccount) -> None:
    """Tell operators an account breached: in the panel until acknowledged, and through ALERT_URLS."""
    alert_raise(
        kind=Alert.Kind.ACCOUNT_BREACH,
        subject=f"breach:{account.pk}:{action.rule_key}:{action.scope}:{action.policy_version}",
        title=f"Account {account.login}: {action.rule_key} breached"
        f"{' (hard)' if action.hard else ''}, measured {action.measured:,.2f} against {action.floor_or_limit:,.2f}",
        body=(
            f"{account} of {account.tenant.tenant_id}: {action.rule_key} ({action.scope}, policy "
            f"v{action.policy_version}) breached at {utc_iso(action.detection_timestamp)}; "
            f"the bridge's action: {action.get_goal_display()}."
        ),
        tenant_id=account.tenant.tenant_id,
        severity=Alert.Severity.CRITICAL if action.hard else Alert.Severity.WARNING,
    )


def _goal_of(breach: rules.Breach, policy: rules.Policy) -> str:
    if not breach.enabled or breach.action == "report":
        return Goal.NONE
    if breach.action == "none" and not policy.disable_trading_on_breach:
        return Goal.NONE
    return GOAL_OF_ACTION[breach.action]


def _finish_without_command(action: ProtectiveAction, policy: rules.Policy) -> None:
    """An action that needs no MT5 command: the enforcement flag is off, or the escalation only
    disables trading (the bridge refuses new positions from now on)."""
    now = timezone.now()
    if action.goal == Goal.TRADING_DISABLED:
        action.execution_status, action.mt5_response = Status.SUCCESS, "trading disabled"
        action.goal_met_at = now
    elif action.action == "report":
        action.execution_status, action.mt5_response = Status.SKIPPED, "report only: no action on MT5"
    elif action.action == "none" and action.enabled:
        action.execution_status, action.mt5_response = Status.SKIPPED, "disable_trading_on_breach is off"
    else:
        action.execution_status = Status.SKIPPED
        action.mt5_response = "enforcement flag is off: recorded, no action taken"
    action.execution_timestamp = now
    action.save(update_fields=["execution_status", "mt5_response", "execution_timestamp", "goal_met_at"])
    protective_action_report(action=action)


def _commands_for(action: ProtectiveAction, snapshot: AccountSnapshot | None) -> list[tuple[str, dict[str, Any]]]:
    """What an attempt sends for the goal: only what the account still holds (a first attempt
    with no snapshot, a recovered one: everything the goal may need)."""
    if action.goal == Goal.POSITION_CLOSED:
        return [(CommandType.CLOSE_POSITION, {"ticket": action.ticket})]
    if action.goal == Goal.POSITION_REDUCED:
        # The volume above the limit, of what the position holds now (a partial close).
        held = next((p for p in snapshot.positions if p.ticket == action.ticket), None) if snapshot else None
        if held is None or held.volume <= action.floor_or_limit:
            return []
        return [
            (CommandType.CLOSE_POSITION, {"ticket": action.ticket, "volume": str(held.volume - action.floor_or_limit)})
        ]
    if action.goal == Goal.ORDER_CANCELLED:
        return [(CommandType.CANCEL_ORDERS, {"tickets": [action.ticket]})]
    close_positions, cancel_orders = CLOSE_ALL_SPECS
    specs: list[tuple[str, dict[str, Any]]] = []
    if action.attempt_count == 0 or snapshot is None or snapshot.positions:
        specs.append((close_positions[0], copy.deepcopy(close_positions[1])))
    if action.attempt_count == 0 or snapshot is None or snapshot.orders:
        specs.append((cancel_orders[0], copy.deepcopy(cancel_orders[1])))
    return specs


def _attempt(
    action: ProtectiveAction,
    account: TradingAccount,
    snapshot: AccountSnapshot | None,
    ahead: SentAhead | None = None,
) -> None:
    """Raise the next attempt at the goal: its commands go to the fast lane in this transaction.
    With closes sent ahead (the first attempt only), its close command reconciles with them."""
    number = action.attempt_count + 1
    commands: list[Command] = []
    for index, (command_type, specific) in enumerate(_commands_for(action, snapshot)):
        command_id = f"{COMMAND_ID_PREFIX}{action.action_id.hex}-{number}-{index}"
        envelope: dict[str, Any] = {
            "raised_by": "risk_engine",
            "protective_action": str(action.action_id),
            "attempt": number,
        }
        if ahead is not None and index == 0 and command_type in CLOSING_COMMANDS:
            envelope["sent_ahead"] = ahead.envelope()
        commands.append(
            command_create(
                tenant=account.tenant,
                account=account,
                common={
                    "command_id": command_id,
                    "command_type": command_type,
                    "priority": Priority.CRITICAL,
                    "fast_lane": True,
                    "reason": f"{action.rule_key}:{action.scope}",
                    "expires_at_utc": None,
                },
                specific=specific,
                envelope=envelope,
                correlation_id=_correlation(action),
                idempotency_key=command_id,
                source=Source.BRIDGE,
            )
        )
    action.attempt_count = number
    action.attempt_commands = [c.pk for c in commands]
    action.attempt_ended_at = None
    action.next_attempt_at = None
    if commands:
        action.command = commands[0]
        # The risk monitor runs the first command itself once it is committed (its lane's worker
        # then finds it taken); elsewhere, or while its dispatcher is busy, the lane runs it.
        first = commands[0].pk
        transaction.on_commit(lambda: dispatch.offer(first))
    action.save(
        update_fields=[
            "attempt_count",
            "attempt_commands",
            "attempt_ended_at",
            "next_attempt_at",
            "command",
        ]
    )
    if number > 1:
        logger.warning("protective action: another attempt", extra={"action_id": str(action.action_id), "n": number})


def protective_action_note(*, action: ProtectiveAction, command: Command) -> None:
    """One of an attempt's commands finished: keep what MT5 answered. Whether the goal holds is
    not concluded here but from the next snapshot read after the attempt ended (`pursue`)."""
    result = command.result or {}
    positions = result.get("positions") or []
    if positions:
        action.positions = positions
    closed = positions if positions else ([result] if command.command_type == CommandType.CLOSE_POSITION else [])
    action.closed_pnl += sum(
        (Decimal(str(p.get("profit") or "0")) for p in closed if p.get("status", "closed") == "closed"),
        Decimal(0),
    )
    action.mt5_response = f"{result.get('retcode_name', '')} {result.get('message', '')}".strip()
    action.error_message = command.error_message
    ended = not Command.objects.filter(pk__in=action.attempt_commands, state__in=ACTIVE).exclude(pk=command.pk).exists()
    fields = ["positions", "closed_pnl", "mt5_response", "error_message"]
    if ended:
        delay = min(FIRST_RETRY_SECONDS * 2 ** max(action.attempt_count - 1, 0), MAX_RETRY_SECONDS)
        action.attempt_ended_at = command.finished_at or timezone.now()
        action.next_attempt_at = action.attempt_ended_at + timedelta(seconds=delay)
        fields += ["attempt_ended_at", "next_attempt_at"]
    action.save(update_fields=fields)


def pursue(
    *, account: TradingAccount, actions: Sequence[ProtectiveAction], snapshot: AccountSnapshot, now: datetime
) -> int:
    """Hold each open action against a snapshot: met, reported; not met and no attempt at work,
    reported when its outcome changed and attempted again when due. Returns the attempts raised."""
    raised = 0
    # Several breaches may want the account flat (a daily and a total drawdown at once): the
    # oldest open one sends the attempts, the others hold the same goal against MT5.
    driver = next((a.pk for a in actions if a.goal == Goal.ACCOUNT_FLAT), None)
    for action in actions:
        if action.attempt_count and action.attempt_ended_at is None:
            if _at_work(action):
                continue  # an attempt is still running: its end is judged on a later snapshot
            _ended_unnoticed(action, now)
        if action.attempt_ended_at is not None and snapshot.observed_at <= action.attempt_ended_at:
            continue  # read before the attempt ended: it cannot tell what the attempt did
        with transaction.atomic(), context.scope(correlation_id=_correlation(action)):
            locked = ProtectiveAction.objects.select_for_update().filter(pk=action.pk, goal_met_at__isnull=True).first()
            if locked is None:
                continue  # met meanwhile (another monitor)
            locked.account, locked.tenant = account, account.tenant
            follower = locked.goal == Goal.ACCOUNT_FLAT and locked.pk != driver
            raised += _pursue_one(locked, account, snapshot, now, may_attempt=not follower)
    return raised


def _pursue_one(
    action: ProtectiveAction, account: TradingAccount, snapshot: AccountSnapshot, now: datetime, *, may_attempt: bool
) -> int:
    if goal_holds(action, snapshot, account):
        action.goal_met_at = now
        action.execution_status = Status.SUCCESS
        action.execution_timestamp = action.attempt_ended_at or now
        action.mt5_response = GOAL_MET[action.goal]
        action.save(update_fields=["goal_met_at", "execution_status", "execution_timestamp", "mt5_response"])
        protective_action_report(action=action)
        return 0
    late = now - action.created_at >= timedelta(seconds=settings.PROTECTION_ALERT_SECONDS)
    if action.attempt_ended_at is not None:
        status = Status.PARTIAL if _partly_done(action, snapshot) else Status.FAILED
        if status != action.reported_status or (late and action.alerted_at is None):
            action.execution_status = status
            action.execution_timestamp = action.attempt_ended_at
            action.save(update_fields=["execution_status", "execution_timestamp"])
            protective_action_report(action=action)
    if late and action.alerted_at is None:
        action.alerted_at = now
        action.save(update_fields=["alerted_at"])
        alert_raise(
            kind=Alert.Kind.PROTECTION_LATE,
            subject=f"action:{action.action_id}",
            title=f"Account {account.login}: {action.get_goal_display()} not reached after "
            f"{action.attempt_count} attempts",
            body=(
                f"{action.rule_key} ({action.scope}, policy v{action.policy_version}) was breached at "
                f"{utc_iso(action.detection_timestamp)}; the goal still does not hold on MT5 "
                f"(last answer: {action.mt5_response or action.error_message or 'none yet'}). The bridge keeps trying."
            ),
            tenant_id=account.tenant.tenant_id,
        )
    if may_attempt and (
        action.attempt_count == 0
        or (action.attempt_ended_at is not None and (action.next_attempt_at is None or now >= action.next_attempt_at))
    ):
        _attempt(action, account, snapshot)
        return 1
    return 0


def _flattened_by_another(action: ProtectiveAction) -> bool:
    """Whether an older open action is already making this account flat."""
    if action.goal != Goal.ACCOUNT_FLAT:
        return False
    others = ProtectiveAction.objects.filter(account_id=action.account_id, goal=Goal.ACCOUNT_FLAT, pk__lt=action.pk)
    return others.filter(goal_met_at__isnull=True).exists()


def _partly_done(action: ProtectiveAction, snapshot: AccountSnapshot) -> bool:
    """A close-all that got part of the way: its positions are closed but orders are left, or it
    closed some positions and others are still open (RISK_RULES.md: `partial`)."""
    if action.goal != Goal.ACCOUNT_FLAT:
        return False
    closed_some = any(p.get("status") == "closed" for p in action.positions if isinstance(p, dict))
    return closed_some or (not snapshot.positions and bool(snapshot.orders))


def _at_work(action: ProtectiveAction) -> bool:
    return Command.objects.filter(pk__in=action.attempt_commands, state__in=ACTIVE).exists()


def _ended_unnoticed(action: ProtectiveAction, now: datetime) -> None:
    """An attempt whose commands all ended without the note (a command expired by the sweeper,
    say): it ended when its last command did."""
    last = Command.objects.filter(pk__in=action.attempt_commands).aggregate(at=Max("finished_at"))["at"]
    action.attempt_ended_at = action.next_attempt_at = last or now
    ProtectiveAction.objects.filter(pk=action.pk).update(
        attempt_ended_at=action.attempt_ended_at, next_attempt_at=action.next_attempt_at
    )


def _correlation(action: ProtectiveAction) -> str:
    return f"risk-{action.action_id}"


def report_payload(action: ProtectiveAction) -> dict[str, Any]:
    """The panel's protective_action_report payload, plus the action's identity, goal and progress.

    Numbers as PROTOCOL §9 gives them in callbacks: JSON numbers, money rounded to the account
    currency's digits, inside `positions[]` too; null for what is absent."""
    money = action.account.money_digits
    payload: dict[str, Any] = {
        "action_id": str(action.action_id),
        "report_sequence": action.report_sequence,
        "rule_key": action.rule_key,
        "policy_version": action.policy_version,
        "goal": action.goal,
        "goal_met": action.goal_met_at is not None,
        "attempts": action.attempt_count,
        "position_id": str(action.ticket) if action.ticket else None,
        "ticket": action.ticket,
        "symbol": action.symbol or None,
        "volume": float(action.volume) if action.volume is not None else None,
        "floating_pnl": decimal_number(action.floating_pnl, money),
        "closed_pnl": decimal_number(action.closed_pnl, money),
        "equity": decimal_number(action.equity, money),
        "balance": decimal_number(action.balance, money),
        "threshold_used": float(action.threshold_used),
        "detection_timestamp": utc_iso(action.detection_timestamp),
        "execution_timestamp": utc_iso(action.execution_timestamp) if action.execution_timestamp else None,
        "execution_status": action.execution_status,
        "mt5_response": action.mt5_response or None,
        "error_message": action.error_message or None,
        "violation_count": action.violation_count,
        "explanation": _explanation_numbers(action.explanation) if action.explanation else None,
    }
    if action.action == "close_all":
        payload["positions"] = callback_numbers(jsonable(action.positions), money)
    return payload


def _explanation_numbers(explanation: dict[str, Any]) -> dict[str, Any]:
    """The stored explanation (exact decimal strings) with its amounts as JSON numbers, the
    callbacks' shape (PROTOCOL.md §9 "Numbers")."""

    def number(value: Any) -> Any:
        if isinstance(value, str):
            try:
                return float(Decimal(value))
            except ArithmeticError:
                return value
        return value

    out = dict(explanation)
    for key in ("measured", "floor_or_limit", "high_water_mark"):
        out[key] = number(out.get(key))
    reference = out.get("reference")
    if isinstance(reference, dict):
        out["reference"] = {**reference, "value": number(reference.get("value"))}
    params = out.get("rule_params")
    if isinstance(params, dict):
        out["rule_params"] = {k: v if k == "trading_day" else number(v) for k, v in params.items()}
    return out


def protective_action_report(*, action: ProtectiveAction) -> None:
    """Write the action's next report to the outbox, in the caller's transaction."""
    action.report_sequence += 1
    action.reported_status = action.execution_status
    action.save(update_fields=["report_sequence", "reported_status"])
    callback_enqueue(
        tenant=action.tenant,
        account=action.account,
        request_type="protective_action_report",
        payload=report_payload(action),
        # The action's report number `report_sequence`; the outbox mints the identity Laravel sees.
        dedup_key=f"protective-action:{action.action_id}:{action.report_sequence}",
        correlation_id=_correlation(action),
        session_id="risk-engine",
        correlation_group="protective-action",
        source_kind="protective_action",
        source_id=str(action.pk),
    )
