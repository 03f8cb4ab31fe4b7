"""Closing before recording: a breach's protective close sent before its action is recorded.

Shared by both monitors that judge a picture they can trust at the moment they judge it: the
event monitor on the Manager API's pumped picture (``risk.events``) and the polling monitor on a
snapshot its terminal's owner has just read (``risk.monitor``, terminal backends). Which breaches
may go ahead, the note written first, the closes sent, and the hold the engine records the action
under are all here, once (docs/architecture.md "Closing before recording").

The rule (``wanted``): only a breach whose goal is a close (a position closed; the account flat:
all of its positions), not recorded yet, on an account with no protective action pursuing its
goal and none of these breaches recorded (checked by the note's own statement,
``protection.sent_ahead_note``). Anything else is the engine's alone, as before.

For each close: the action's id is chosen first, one short autocommitted statement writes the note
(``protection.sent_ahead_note``; none written, nothing sent), then the close(s) go out under the
tag of the action's first close command (``protection.first_close_tag``) through the gateway's
pair:

- ``close_ahead(login, server, position, *, tag)``: send a market close of the whole position
  without waiting for its answer; returns a handle, or None when it was refused at once (nothing
  was sent); raises ``GatewayUnavailable`` when whether it went out is unknown;
- ``close_outcome(handle)``: ``"filled"``, ``"refused"`` or ``"in_flight"`` (no final answer yet,
  or the answer was lost: only a deal found by its tag can tell), without waiting.

The breach is then held (``protection.sent_ahead_hold``) while the engine records it: the action
takes the chosen id and its first close command carries ``sent_ahead`` in its envelope, so it
reconciles with the closes by their tag instead of sending again, and waits for those still in
flight (``execution.executors._closed_ahead``). A close refused, or whose answer is lost, leaves
the command's normal pursuit to close the position. ``settle`` releases the holds after the
engine, and logs a close whose breach the engine did not record (its note stays for the sweeper,
``protection.sent_ahead_recover``).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any, Literal, Protocol

from django.utils import timezone

from execution.gateway import AccountSnapshot, GatewayUnavailable, Position
from risk import protection, rules

logger = logging.getLogger("bridge.risk")

BreachKey = tuple[int, str, str, int]  # (account pk, rule_key, scope, policy_version)
# The goals whose closes a monitor sends before the action is recorded.
SENT_AHEAD_GOALS = (protection.Goal.POSITION_CLOSED, protection.Goal.ACCOUNT_FLAT)
# The breaches remembered as sent ahead (for tests, health and the benchmarks) at most.
REMEMBERED = 10_000

Outcome = Literal["filled", "refused", "in_flight"]


class Closer(Protocol):
    """A gateway that can close ahead (the Manager API gateway, the terminal router)."""

    def close_ahead(self, login: int, server: str, position: Position, *, tag: str) -> Any | None: ...

    def close_outcome(self, handle: Any) -> Outcome: ...


@dataclass(frozen=True)
class Judged:
    """An account's trusted snapshot and the breaches a monitor found on it (not yet recorded)."""

    pk: int
    login: int
    server: str
    policy: rules.Policy
    snapshot: AccountSnapshot
    breaches: Sequence[rules.Breach]


def wanted(
    pk: int, policy: rules.Policy, breaches: Iterable[rules.Breach]
) -> list[tuple[rules.Breach, str, BreachKey]] | None:
    """The account's breaches not yet recorded, with their goals and keys, when one of them may be
    sent ahead (its goal is a close); None when none may."""
    found: list[tuple[rules.Breach, str, BreachKey]] = []
    for breach in breaches:
        key: BreachKey = (pk, breach.rule_key, breach.scope, policy.policy_version)
        if not protection.is_recorded(key):
            found.append((breach, protection.goal_of(breach, policy), key))
    return found if any(goal in SENT_AHEAD_GOALS for _, goal, _ in found) else None


class SendAhead:
    """One monitor's closes sent ahead. ``gateway``: the ``Closer``; ``answer_timeout``: how long
    a close's answer may take (a command waits that long for one still in flight); ``trusted``:
    whether the picture is still the server's own (asked before each close); ``link_up``: whether
    the link to MT5 is up (a close refused with the link gone may have gone out all the same);
    ``sent``: the breaches sent ahead, with their closes' tag, for whoever wants to see them."""

    def __init__(
        self,
        gateway: Closer,
        *,
        answer_timeout: float,
        trusted: Callable[[], bool] = lambda: True,
        link_up: Callable[[], bool] = lambda: True,
        sent: dict[BreachKey, str] | None = None,
        who: str = "risk monitor",
    ) -> None:
        self.gateway = gateway
        self.answer_timeout = answer_timeout
        self.trusted = trusted
        self.link_up = link_up
        self.sent: dict[BreachKey, str] = {} if sent is None else sent
        self.who = who

    def send(self, judged: Iterable[Judged]) -> list[BreachKey]:
        """Send the closes of the breaches ``judged`` shows that may go ahead (``wanted``) and hold
        each for the engine; returns the breaches held (``settle`` releases them after the engine).
        Never raises: the engine below still judges and acts, as before."""
        held: list[BreachKey] = []
        try:
            self._send(judged, held)
        except Exception:
            logger.exception(f"{self.who}: sending ahead failed")
        return held

    def _send(self, judged: Iterable[Judged], held: list[BreachKey]) -> None:
        if not self.trusted():
            return
        chosen: list[tuple[Judged, list[tuple[rules.Breach, str, BreachKey]]]] = []
        for account in judged:
            breaches = wanted(account.pk, account.policy, account.breaches)
            if breaches is not None:
                chosen.append((account, breaches))
        for account, breaches in chosen:
            keys = [k for *_, k in breaches]  # the note's check: none of them recorded yet
            positions = {p.ticket: p for p in account.snapshot.positions}
            flat = next(((b, k) for b, goal, k in breaches if goal == protection.Goal.ACCOUNT_FLAT), None)
            if flat is not None:  # every position, under the flat action's tag; the others share it
                sends = [(flat[0], flat[1], list(positions.values()), [k for *_, k in breaches if k != flat[1]])]
            else:
                sends = [
                    (b, k, [positions[b.ticket]], [])
                    for b, goal, k in breaches
                    if goal == protection.Goal.POSITION_CLOSED and b.ticket in positions
                ]
            for breach, breach_key, closes, others in sends:
                if not self.trusted():
                    return
                # The note keeps the breaches whose goals these closes meet (a flat close's
                # single-trade breaches: gone with their positions, the next read would not see them).
                sharing = [b for b, goal, k in breaches if k in others and goal in SENT_AHEAD_GOALS]
                ahead = self._close(account, breach, breach_key, closes, sharing, keys)
                if ahead is None:
                    continue
                protection.sent_ahead_hold(breach_key, ahead)
                held.append(breach_key)
                for other in others:
                    protection.sent_ahead_hold(other, replace(ahead, action_id=None))
                    held.append(other)

    def _close(
        self,
        account: Judged,
        breach: rules.Breach,
        breach_key: BreachKey,
        closes: list[Position],
        sharing: Sequence[rules.Breach] = (),
        keys: Sequence[BreachKey] = (),
    ) -> protection.SentAhead | None:
        action_id = uuid.uuid4()
        tag = protection.first_close_tag(action_id)
        sent_at = timezone.now()
        # One autocommitted statement before the closes, written only when the account is not
        # busy (an action pursuing its goal, or one of ``keys`` recorded): should the action never
        # be recorded (this process dies before it, the engine judges otherwise) the sweeper
        # records it from the note.
        noted = protection.sent_ahead_note(
            account_pk=breach_key[0],
            breach=breach,
            snapshot=account.snapshot,
            policy=account.policy,
            action_id=action_id,
            tag=tag,
            tickets=[position.ticket for position in closes],
            sent_at=sent_at,
            sharing=sharing,
            breaches=keys,
        )
        if not noted:
            return None  # nothing sent ahead: the engine's command sends, as before
        pending: dict[int, Any] = {}
        unknown: list[int] = []  # the send raised: whether it went out is unknown
        for position in closes:
            try:
                pending[position.ticket] = self.gateway.close_ahead(account.login, account.server, position, tag=tag)
            except GatewayUnavailable as exc:  # the link went: the rest is left to the command
                logger.warning(f"{self.who}: a close sent ahead failed", extra={"error": exc.message})
                unknown.append(position.ticket)
                break
        sent = {ticket: handle for ticket, handle in pending.items() if handle is not None}
        if not sent and not unknown:
            protection.sent_ahead_unnote(action_id)
            return None  # nothing went out: the engine's command sends, as before
        if len(self.sent) > REMEMBERED:
            self.sent.clear()
        self.sent[breach_key] = tag
        outcome = self.gateway.close_outcome
        # A close refused with the link gone may have reached the server all the same: in flight,
        # like one whose send raised.
        refused_offline = [t for t, handle in pending.items() if handle is None and not self.link_up()]
        maybe = (*unknown, *refused_offline)

        def in_flight() -> tuple[int, ...]:
            return (*maybe, *(t for t, handle in sent.items() if outcome(handle) == "in_flight"))

        return protection.SentAhead(
            action_id=action_id,
            tag=tag,
            sent_at=sent_at,
            until=sent_at + timedelta(seconds=self.answer_timeout),
            tickets=(*pending, *unknown),
            in_flight=in_flight,
        )

    def settle(self, held: Sequence[BreachKey]) -> None:
        """After the engine: release the holds. A close sent ahead whose breach the engine did not
        record (it judged otherwise from the database's state): its note stays, and the sweeper
        records the action from it once ``SENT_AHEAD_RECOVER_SECONDS`` have passed
        (``protection.sent_ahead_recover``)."""
        for breach_key in held:
            protection.sent_ahead_release(breach_key)
        for breach_key in held:
            if breach_key in self.sent and not protection.is_recorded(breach_key):
                logger.error(
                    f"{self.who}: a close was sent ahead for a breach the engine did not record (its note stays)",
                    extra={"breach": list(breach_key), "tag": self.sent[breach_key]},
                )
