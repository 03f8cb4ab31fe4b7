"""``EventMonitor``: the event-driven risk monitor for the Manager API backend (issue #17 item 3;
the polling ``Monitor`` stays the safety net and the terminal backends' monitor).

It listens to the manager connection (``execution.adapters.manager.ManagerConnection``) and keeps
every watched account's picture in memory, in numpy arrays:

- **Per account** (one row each): equity, balance, what the policy measures (equity or
  balance), the daily and total floors, the high-water mark and what a trailing floor needs,
  when the account's trading day ends, and which drawdown breaches a real read already
  confirmed as recorded.
- **Per symbol** (one slot per open position on it): the account's row, the position's side,
  volume x contract size, open price, conversion, its profit in memory, its swap + commission,
  the account's single-trade limit, and whether the position was already counted.

**A tick** of a symbol revalues only that symbol's slots (a few array operations: the new price
of each position, its profit, the change summed per account with ``bincount``), then compares,
for only the accounts holding the symbol, the measured value with the floors and each of the
symbol's positions with its single-trade limit, all in bulk. A new high-water mark raises a
trailing floor in memory (no read). Nothing else happens on a quiet tick: no database, no MT5
call, no Python loop over accounts.

**A suspect picture** (a floor or a limit crossed, a trading day ended) is judged from the pumped
picture when that can be trusted (``act``: resynced on the current connection, exact conversions,
the connection's prices, the pumped positions the ones revalued), else read from MT5 in one bulk
read first (``confirm``); either snapshot goes through ``engine.risk_evaluate_snapshots``
(persisted, protective actions raised exactly once, as by the polling monitor), and the account's
arrays are rebuilt from it. A drawdown breach already recorded (its action at work) is not judged
again at every tick: only a breach the account did not already have, or a new position over its
limit, is.

**Closing before recording.** On the trusted pumped picture, a breach whose goal is a close (the
position; the account flat) is closed at once: ``DealerSend`` from the pumped position, under the
tag of the first close command of the action about to be recorded (its id chosen first), then the
engine records the action and that command, which reconciles with the close by its tag instead of
sending again (``protection.SentAhead``; docs/manager-api.md "Acting before recording"). Just
before the closes, one autocommitted INSERT writes their note (``SentAheadNote``; none written,
nothing sent ahead): the engine deletes it as it records the action, and the sweeper records the
action from a note left behind (``protection.sent_ahead_recover``). The rule, the note and the
hold are ``risk.ahead``'s, shared with the polling monitor on the terminal backends.

**A position, order, deal or user event** reads that account afresh and evaluates it.

**A (re)connect** makes the monitor distrust everything: it ignores events until it has read
every account it owns again (``on_resync``) and evaluated them, so a breach that happened
while the link was down is found by the resync, not missed.

Several monitors share the accounts as the polling ones do (``owns``: the rendezvous hash of
``risk.monitor.owner_of``), so none is watched twice.

Revaluation converts a price move into the account's currency with the symbol's contract size:
profit currency = the account's: x 1 (exact); base currency = the account's: / the price
(exact); otherwise the rate the position's last snapshot implies (linear, close). Profits are
rounded by MT5 per position: the comparisons allow half a cent per position (a read more, never
a breach less).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

# np.unique (behind a tick's np.union1d of its suspects) imports numpy.ma on its first call, about
# 8 ms: imported here, at start, not on the first breach after a restart.
import numpy.ma
import numpy.typing as npt
from django.utils import timezone

from execution.gateway import AccountSnapshot, Gateway, GatewayUnavailable
from policies.models import AccountRisk
from risk import ahead, protection, rules
from risk.engine import (
    WatchedAccount,
    account_view,
    risk_evaluate_snapshots,
    state_from_row,
    watched_accounts,
)

logger = logging.getLogger("bridge.risk")

Key = tuple[int, str]
BreachKey = ahead.BreachKey
Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]

# MT5 rounds each position's profit to the account's cents: allow half a cent per position.
ROUNDING_PER_POSITION = 0.005
# Accounts read together when several are suspect at once (one bulk read each).
CONFIRM_CHUNK = 2000


def _grow(array: npt.NDArray[Any], size: int) -> npt.NDArray[Any]:
    if size <= len(array):
        return array
    grown = np.zeros(max(size, 2 * len(array), 64), dtype=array.dtype)
    grown[: len(array)] = array
    return grown


@dataclass
class _Book:
    """One symbol's open positions, a slot each (a freed slot is reused)."""

    used: int = 0
    free: list[int] = field(default_factory=list)
    row: Ints = field(default_factory=lambda: np.zeros(0, np.int64))  # the account's row
    buy: Bools = field(default_factory=lambda: np.zeros(0, np.bool_))
    size: Floats = field(default_factory=lambda: np.zeros(0))  # +/- volume x contract size
    open: Floats = field(default_factory=lambda: np.zeros(0))
    rate: Floats = field(default_factory=lambda: np.zeros(0))  # profit currency -> account's
    inverse: Bools = field(default_factory=lambda: np.zeros(0, np.bool_))  # rate = 1 / price
    profit: Floats = field(default_factory=lambda: np.zeros(0))
    cost: Floats = field(default_factory=lambda: np.zeros(0))  # swap + commission
    ticket: Ints = field(default_factory=lambda: np.zeros(0, np.int64))
    current: Floats = field(default_factory=lambda: np.zeros(0))  # the price of the read that filled it
    # The profit below which the position is suspect: its single-trade limit less its swap and
    # commission, plus the rounding allowance; -inf once counted (or for a free slot).
    trip: Floats = field(default_factory=lambda: np.zeros(0))
    seen: Ints = field(default_factory=lambda: np.zeros(0, np.int64))  # ``ticks`` when the slot was filled
    live: Bools = field(default_factory=lambda: np.zeros(0, np.bool_))
    ticks: int = 0
    _counts: dict[int, int] = field(default_factory=dict)  # live slots per account row
    _changed: set[int] = field(default_factory=set)  # rows whose holding began or ended since ``holders``
    bid: float = 0.0  # the last tick's
    ask: float = 0.0
    from_server = False  # the last tick came from the connection (OnTick), not another caller
    unit: bool = True  # every position's rate is 1: no conversion to compute
    _holders: Ints | None = None

    _ARRAYS = ("row", "buy", "size", "open", "rate", "inverse", "profit", "trip", "seen", "live", "ticket", "current")

    def take(self) -> int:
        if self.free:
            return self.free.pop()
        slot = self.used
        self.used += 1
        if self.used > len(self.row):
            for name in self._ARRAYS:
                setattr(self, name, _grow(getattr(self, name), self.used))
        return slot

    def release(self, slot: int) -> None:
        self.live[slot] = False
        self.size[slot] = self.profit[slot] = 0.0
        self.trip[slot] = -np.inf
        self.free.append(slot)
        row = int(self.row[slot])
        left = self._counts[row] = self._counts.get(row, 1) - 1
        if left <= 0:
            del self._counts[row]
            self._changed.add(row)

    def hold(self, slot: int, row: int) -> None:
        """The slot is the account ``row``'s position now."""
        self.row[slot] = row
        self.live[slot] = True
        self._counts[row] = self._counts.get(row, 0) + 1
        if self._counts[row] == 1:
            self._changed.add(row)

    @property
    def holders(self) -> Ints:
        """The rows of the accounts holding this symbol (sorted, once each). Computed again only
        when an account came or went: one whose positions were just read again (released, then
        held again) leaves it as it was."""
        current = self._holders
        if current is None or self._changed:
            changed, self._changed = self._changed, set()
            if current is None or any(self._holds(current, row) != (row in self._counts) for row in changed):
                current = self._holders = np.fromiter(sorted(self._counts), np.int64, len(self._counts))
        return current

    @staticmethod
    def _holds(holders: Ints, row: int) -> bool:
        at = int(np.searchsorted(holders, row))
        return at < len(holders) and int(holders[at]) == row


@dataclass
class _Held:
    """What is kept of an account besides its arrays: not its snapshot (the arrays hold what a
    tick needs; a hundred thousand ``Position`` records would be most of the monitor's memory)."""

    watched: WatchedAccount
    state: rules.RiskState
    row: int
    tickets: tuple[int, ...] = ()
    slots: list[tuple[str, int]] = field(default_factory=list)


class EventMonitor:
    """See the module docstring. ``gateway`` is a Manager API gateway (it has ``conn``)."""

    def __init__(
        self,
        gateway: Gateway,
        *,
        owns: Callable[[int], bool] = lambda pk: True,
        now: Callable[[], datetime] = timezone.now,
    ) -> None:
        self.gateway = gateway
        self.owns = owns
        self.now = now
        self.trusted = False
        self._held: dict[Key, _Held] = {}
        self._by_login: dict[int, Key] = {}
        self._keys: list[Key | None] = []  # row -> key
        self._free_rows: list[int] = []
        self._books: dict[str, _Book] = {}
        self._contracts: dict[str, tuple[float, str, str]] = {}
        self._lock = threading.RLock()
        # Per account row.
        self._equity: Floats = np.zeros(0)
        self._balance: Floats = np.zeros(0)
        self._on_equity: Bools = np.zeros(0, np.bool_)
        self._daily_floor: Floats = np.zeros(0)
        self._total_floor: Floats = np.zeros(0)
        self._hwm: Floats = np.zeros(0)
        self._trailing: Bools = np.zeros(0, np.bool_)
        self._lock_at: Floats = np.zeros(0)  # the locked floor's cap (I), +inf when not locked
        self._total_amount: Floats = np.zeros(0)
        self._slack: Floats = np.zeros(0)
        # The measured value below which the account is suspect: the higher of the floors whose
        # breach is not already recorded, plus the rounding allowance (-inf when the policy
        # measures balance, which no tick moves).
        self._trip: Floats = np.zeros(0)
        self._day_ends: Floats = np.zeros(0)  # epoch seconds
        self._next_day_end = np.inf
        self._daily_known: Bools = np.zeros(0, np.bool_)  # a recorded daily breach, confirmed
        self._total_known: Bools = np.zeros(0, np.bool_)
        self._exact: Bools = np.zeros(0, np.bool_)  # every position's conversion exact (no implied rate)
        # What it did, for health, tests and the benchmark.
        self.resyncs = 0
        self.ticks = 0
        self.confirmations: Counter[Key] = Counter()
        self.acted: Counter[Key] = Counter()  # judged from the pumped picture (no round trip)
        self.judged: Counter[Key] = Counter()  # judged either way (acted + confirmed)
        # The breaches whose closes were sent ahead of their record, with the closes' tag.
        self.sent_ahead: dict[BreachKey, str] = {}
        self._sender: ahead.SendAhead | None = None
        self._generation: int | None = None  # the connection's generation the picture was resynced on

    _ROW_ARRAYS = (
        "_equity", "_balance", "_on_equity", "_daily_floor", "_total_floor", "_hwm", "_trailing", "_lock_at",
        "_total_amount", "_slack", "_trip", "_day_ends", "_daily_known", "_total_known", "_exact",
    )  # fmt: skip

    def start(self) -> None:
        """Listen, and resync now if the connection is already up (else its connect will)."""
        connection = self.gateway.conn  # type: ignore[attr-defined]
        connection.listen(self)
        # The events are judged on the connection's dispatcher thread: the first breach there must
        # not open its database connection (``protection.warm_up``).
        connection.on_dispatcher(protection.warm_up)
        if connection.connected:
            self.resync()

    # --- what it holds, for tests and health ------------------------------------------------------
    def watched_keys(self) -> set[Key]:
        with self._lock:
            return set(self._held)

    def revaluations(self, key: Key) -> int:
        """How many ticks revalued ``key`` since it was last rebuilt from a read."""
        with self._lock:
            held = self._held.get(key)
            if held is None:
                return 0
            seen = {symbol: int(self._books[symbol].seen[slot]) for symbol, slot in held.slots}
            return sum(self._books[symbol].ticks - at for symbol, at in seen.items())

    def revalued_keys(self) -> set[Key]:
        with self._lock:
            return {key for key in self._held if self.revaluations(key)}

    def equity(self, key: Key) -> float:
        """The account's equity in memory."""
        with self._lock:
            return float(self._equity[self._held[key].row])

    def high_water_mark(self, key: Key) -> float:
        with self._lock:
            return float(self._hwm[self._held[key].row])

    def position_profit(self, key: Key, ticket: int) -> float:
        with self._lock:
            held = self._held[key]
            for (symbol, slot), held_ticket in zip(held.slots, held.tickets, strict=True):
                if held_ticket == ticket:
                    return float(self._books[symbol].profit[slot])
        raise KeyError(ticket)

    def memory_bytes(self) -> int:
        """The numpy arrays' size (the Python objects around them are not counted)."""
        total = sum(getattr(self, name).nbytes for name in self._ROW_ARRAYS)
        for book in self._books.values():
            total += sum(getattr(book, name).nbytes for name in _Book._ARRAYS)
        return total

    # --- the listener ---------------------------------------------------------------------------
    def on_resync(self, connection: Any) -> None:
        self.resync()
        protection.warm_up()  # the resync read other tables than a breach writes

    def on_event(self, kind: str, args: tuple[Any, ...]) -> None:
        if kind == "disconnect":
            self.trusted = False
            return
        if not self.trusted:
            return  # the resync after the connect will look at everything
        try:
            if kind == "tick":
                symbol, tick = args
                self.tick(str(symbol), float(tick.bid), float(tick.ask), from_server=True)
            elif args and hasattr(args[0], "Login"):
                key = self._by_login.get(int(args[0].Login))
                if key is not None:
                    self.confirm([key])
        except Exception:  # one bad event must not stop the others
            logger.exception("event monitor: %s failed", kind)

    # --- resync -------------------------------------------------------------------------------------
    def resync(self) -> None:
        """Read every owned account again and evaluate it; trust the state only after that."""
        with self._lock:
            self.trusted = False
            connection = getattr(self.gateway, "conn", None)
            generation = getattr(connection, "generation", None)
            watched = [w for w in watched_accounts() if self.owns(w.pk)]
            try:
                watched = self._in_groups(watched)
                snapshots = self._read([(w.login, w.server) for w in watched])
            except GatewayUnavailable as exc:
                logger.warning("event monitor: resync failed", extra={"error": exc.message})
                return
            self._clear()
            self._judge_and_hold(watched, snapshots)
            self.resyncs += 1
            # A drop during the reads: events were lost meanwhile, so the picture is not trusted
            # until the resync that follows the reconnect.
            dropped = connection is not None and (not connection.connected or connection.generation != generation)
            self.trusted = not dropped
            self._generation = generation

    def _in_groups(self, watched: list[WatchedAccount]) -> list[WatchedAccount]:
        """Only the accounts of ``MT5_MANAGER_GROUPS``: the others are not this manager's to watch
        (the polling monitor reports them unreadable)."""
        in_groups = getattr(self.gateway, "in_groups", None)
        if in_groups is None or not watched:
            return watched
        inside = in_groups([w.login for w in watched])
        return [w for w in watched if w.login in inside]

    def _read(self, keys: list[Key]) -> dict[Key, AccountSnapshot | Exception]:
        found: dict[Key, AccountSnapshot | Exception] = {}
        for start in range(0, len(keys), CONFIRM_CHUNK):
            found.update(self.gateway.account_snapshots(keys[start : start + CONFIRM_CHUNK]))
        return found

    def _judge_and_hold(self, watched: list[WatchedAccount], snapshots: dict[Key, AccountSnapshot | Exception]) -> None:
        """The engine on the real snapshots (the only path that acts), then hold what they show."""
        risk_evaluate_snapshots(accounts=watched, snapshots=snapshots, now=self.now())
        states: dict[int, rules.RiskState] = {}
        pks = [w.pk for w in watched]
        for start in range(0, len(pks), 5000):
            for row in AccountRisk.objects.filter(account_id__in=pks[start : start + 5000]):
                states[row.account_id] = state_from_row(row)
        for w in watched:
            snapshot = snapshots.get((w.login, w.server))
            if not isinstance(snapshot, AccountSnapshot):
                continue  # unreadable: an account held keeps its picture, and ticks read it again
            try:
                self._hold(w, snapshot, states.get(w.pk))
            except rules.StalePolicyError:
                # The state is for a newer policy than this monitor's list: the polling monitor
                # watches the account until the next resync brings the list up to date.
                self._forget((w.login, w.server))

    def _clear(self) -> None:
        self._held.clear()
        self._by_login.clear()
        self._keys.clear()
        self._free_rows.clear()
        self._books.clear()
        self._next_day_end = np.inf
        for name in self._ROW_ARRAYS:
            setattr(self, name, np.zeros(0, getattr(self, name).dtype))

    # --- holding an account -----------------------------------------------------------------------
    def _row_for(self, key: Key) -> int:
        held = self._held.get(key)
        if held is not None:
            for symbol, slot in held.slots:
                self._books[symbol].release(slot)
            return held.row
        if self._free_rows:
            row = self._free_rows.pop()
            self._keys[row] = key
            return row
        row = len(self._keys)
        self._keys.append(key)
        for name in self._ROW_ARRAYS:
            setattr(self, name, _grow(getattr(self, name), row + 1))
        return row

    def _forget(self, key: Key) -> None:
        held = self._held.pop(key, None)
        if held is None:
            return
        for symbol, slot in held.slots:
            self._books[symbol].release(slot)
        self._by_login.pop(key[0], None)
        self._keys[held.row] = None
        self._equity[held.row] = 0.0
        self._trip[held.row] = -np.inf
        self._hwm[held.row] = np.inf
        self._day_ends[held.row] = np.inf
        self._free_rows.append(held.row)

    def _hold(self, watched: WatchedAccount, snapshot: AccountSnapshot, state: rules.RiskState | None) -> None:
        """Put the account's real snapshot and risk state in the arrays."""
        key = (watched.login, watched.server)
        row = self._row_for(key)
        policy = watched.policy
        if state is None or state.policy_version != policy.policy_version:
            state = rules.RiskState.apply_policy(state, policy)
        view = account_view(snapshot)
        evaluation = rules.evaluate(view, policy, state)
        t = policy.thresholds
        recorded = {
            b.rule_key
            for b in evaluation.breaches
            if protection.is_recorded((watched.pk, b.rule_key, b.scope, policy.policy_version))
        }
        self._equity[row] = float(snapshot.equity)
        self._balance[row] = float(snapshot.balance)
        self._on_equity[row] = t.measure_equity
        # A rule turned off (RISK_RULES v2: a null percent) has no floor: never below it.
        self._daily_floor[row] = -np.inf if evaluation.daily_floor is None else float(evaluation.daily_floor)
        self._total_floor[row] = -np.inf if evaluation.total_floor is None else float(evaluation.total_floor)
        # Only equity moves with ticks: the high-water mark follows them only when it trails equity
        # (RISK_RULES v2 `trailing_source`); a balance or end-of-day high does not move between reads.
        self._hwm[row] = float(evaluation.state.high_water_mark) if t.trailing_source == "equity" else np.inf
        self._trailing[row] = t.trailing
        self._lock_at[row] = float(t.lock_at) if t.lock else np.inf  # I + trailing_lock_offset
        self._total_amount[row] = np.inf if t.total_amount is None else float(t.total_amount)
        self._slack[row] = ROUNDING_PER_POSITION * (len(snapshot.positions) + 1)
        day = evaluation.state.daily_reference_date
        ends = policy.calendar.end_of(day)  # the trading day's end in its own time zone (v2)
        self._day_ends[row] = ends.timestamp()
        self._next_day_end = min(self._next_day_end, ends.timestamp())
        # A breach this real read shows whose protective action is recorded: known until the
        # account is read again, so ticks do not read it again while its action is at work.
        self._daily_known[row] = "daily_drawdown" in recorded
        self._total_known[row] = "total_drawdown" in recorded
        self._retrip(np.array([row]))
        counted = evaluation.state.breached_tickets
        limit = -np.inf if t.single_trade_limit is None else float(t.single_trade_limit) + ROUNDING_PER_POSITION
        slots: list[tuple[str, int]] = []
        exact = True
        for p in snapshot.positions:
            book = self._books.setdefault(p.symbol, _Book())
            slot = book.take()
            size, rate, inverse = self._conversion(snapshot, p)
            exact = exact and (inverse or rate == 1.0)
            book.ticket[slot] = p.ticket
            book.current[slot] = float(p.price_current)
            book.hold(slot, row)
            book.buy[slot] = p.side == "buy"
            book.size[slot] = size
            book.open[slot] = float(p.price_open)
            book.rate[slot] = rate
            book.inverse[slot] = inverse
            book.unit = book.unit and rate == 1.0 and not inverse
            book.profit[slot] = float(p.profit)
            book.trip[slot] = -np.inf if p.ticket in counted else limit - float(p.swap + p.commission)
            book.seen[slot] = book.ticks
            slots.append((p.symbol, slot))
        self._exact[row] = exact
        self._held[key] = _Held(watched, evaluation.state, row, tuple(p.ticket for p in snapshot.positions), slots)
        self._by_login[watched.login] = key

    def _retrip(self, rows: Ints) -> None:
        """The rows' trip level from their floors and which breaches are already recorded."""
        daily = np.where(self._daily_known[rows], -np.inf, self._daily_floor[rows])
        total = np.where(self._total_known[rows], -np.inf, self._total_floor[rows])
        level = np.maximum(daily, total) + self._slack[rows]
        self._trip[rows] = np.where(self._on_equity[rows], level, -np.inf)

    def _contract(self, snapshot: AccountSnapshot, symbol: str) -> tuple[float, str, str]:
        if symbol not in self._contracts:
            info = self.gateway.symbol_info(snapshot.login, snapshot.server, symbol)
            if info is None:
                raise GatewayUnavailable(f"symbol {symbol} is unknown to the server")
            self._contracts[symbol] = (float(info.contract_size), info.currency_profit, info.currency_base)
        return self._contracts[symbol]

    def _conversion(self, snapshot: AccountSnapshot, p: Any) -> tuple[float, float, bool]:
        """(signed volume x contract size, rate, rate is 1 / price) so that profit =
        size x (price - open) x rate."""
        contract, profit_ccy, base_ccy = self._contract(snapshot, p.symbol)
        size = (1.0 if p.side == "buy" else -1.0) * float(p.volume) * contract
        if profit_ccy == snapshot.currency:
            return size, 1.0, False
        if base_ccy == snapshot.currency:
            return size, 0.0, True
        moved = float(p.price_current - p.price_open)
        if moved and size:
            return size, float(p.profit) / (size * moved), False
        return size, 1.0, False

    # --- ticks ----------------------------------------------------------------------------------------
    def tick(self, symbol: str, bid: float, ask: float, *, from_server: bool = False) -> None:
        """Revalue the symbol's positions and judge only their accounts, in bulk."""
        with self._lock:
            book = self._books.get(symbol)
            self.ticks += 1
            if book is None or not book.used or bid <= 0 or ask <= 0:
                return
            holders = book.holders
            if not len(holders):
                return
            n = book.used
            book.ticks += 1
            book.bid, book.ask, book.from_server = bid, ask, from_server
            price = np.where(book.buy[:n], bid, ask)
            profit = book.size[:n] * (price - book.open[:n])
            if not book.unit:
                profit *= np.where(book.inverse[:n], 1.0 / price, book.rate[:n])
            moved = np.bincount(book.row[:n], weights=profit - book.profit[:n], minlength=len(self._equity))
            book.profit[:n] = profit
            self._equity += moved  # zero but for the holders
            equity = self._equity[holders]
            # A new high-water mark raises a trailing floor (capped at I when locked; never down).
            higher = equity > self._hwm[holders]
            if higher.any():
                rows = holders[higher]
                self._hwm[rows] = equity[higher]
                trailing = rows[self._trailing[rows]]
                if len(trailing):
                    floor = np.minimum(self._hwm[trailing] - self._total_amount[trailing], self._lock_at[trailing])
                    self._total_floor[trailing] = np.maximum(self._total_floor[trailing], floor)
                    self._retrip(trailing)
            suspect = equity < self._trip[holders]
            now = self.now().timestamp()
            if now >= self._next_day_end:  # a trading day ended: its floors are read afresh
                suspect |= self._day_ends[holders] <= now
            over = profit < book.trip[:n]
            rows = holders[suspect]
            if over.any():
                rows = np.union1d(rows, book.row[:n][over])
            if len(rows):
                self.act([key for key in (self._keys[int(r)] for r in rows) if key is not None])
                if now >= self._next_day_end:
                    self._next_day_end = float(self._day_ends[: len(self._keys)].min(initial=np.inf))

    # --- acting on the pumped picture -----------------------------------------------------------------
    def act(self, keys: Iterable[Key]) -> None:
        """Judge suspect accounts from the pumped picture when it can be trusted, else read them.

        The Manager API's pumped copy is the server's own state, kept by the server's events,
        which reach this monitor in order on one thread: after a resync on the current
        connection (``trusted``) nothing in it is stale. Equity and profits come from the
        revaluation at the latest ticks, which is exact (to MT5's per-position rounding) when
        every position's conversion is (the account's currency, or the symbol's base). So such
        an account is judged with no round trip; any other (an implied conversion rate, positions
        that differ from the copy's: an event not yet seen, a price handed to ``tick`` by a caller
        other than the connection) is read from the server first."""
        with self._lock:
            wanted = [key for key in keys if key in self._held]
            pumped = getattr(self.gateway, "pumped_snapshots", None)
            connection = getattr(self.gateway, "conn", None)
            if not wanted:
                return
            if pumped is None or not self.trusted or connection is None or not connection.connected:
                self.confirm(wanted)
                return
            revalued = {
                key: (float(self._equity[self._held[key].row]), self._positions_now(self._held[key]))
                for key in wanted
                if self._exact[self._held[key].row] and self._server_prices(self._held[key])
            }
            found: dict[Key, AccountSnapshot | Exception] = {}
            if revalued:
                try:
                    found = pumped(revalued)
                except GatewayUnavailable as exc:
                    logger.warning("event monitor: pumped read failed", extra={"error": exc.message})
            judged: dict[Key, AccountSnapshot] = {
                key: snapshot for key, snapshot in found.items() if isinstance(snapshot, AccountSnapshot)
            }
            if judged:
                for key in judged:
                    self.acted[key] += 1
                    self.judged[key] += 1
                sent: list[BreachKey] = []
                try:
                    sent = self._send_ahead(judged)
                except Exception:  # the engine below still judges and acts, as before
                    logger.exception("event monitor: sending ahead failed")
                try:
                    self._judge_and_hold([self._held[key].watched for key in judged], dict(judged))
                finally:
                    if self._sender is not None:
                        self._sender.settle(sent)
            rest = [key for key in wanted if key not in judged]
            if rest:
                self.confirm(rest)

    # --- closing before recording (docs/manager-api.md "Acting before recording") ------------------
    def _send_ahead(self, judged: dict[Key, AccountSnapshot]) -> list[BreachKey]:
        """Send the protective closes of the breaches the pumped picture shows, before the engine
        records them: the event path's ``DealerSend`` then waits for no transaction, no fast-lane
        pickup and no read of the position (``risk.ahead``, shared with the polling monitor).

        Only on the trusted picture (resynced on this very connection, still connected); which
        breaches may go ahead, the note and the hold are ``risk.ahead``'s. Returns the breaches
        held for the engine (``_sender.settle`` releases them after it)."""
        connection = getattr(self.gateway, "conn", None)
        if getattr(self.gateway, "close_ahead", None) is None or connection is None:
            return []
        if self._sender is None:
            self._sender = ahead.SendAhead(
                self.gateway,  # type: ignore[arg-type]
                answer_timeout=connection.answer_timeout,
                trusted=lambda: self._trusted_now(self.gateway.conn),  # type: ignore[attr-defined]
                link_up=lambda: bool(self.gateway.conn.connected),  # type: ignore[attr-defined]
                sent=self.sent_ahead,
                who="event monitor",
            )
        accounts = []
        for key, snapshot in judged.items():
            held = self._held[key]
            policy = held.watched.policy
            evaluation = rules.evaluate(account_view(snapshot), policy, held.state)
            accounts.append(ahead.Judged(held.watched.pk, key[0], key[1], policy, snapshot, evaluation.breaches))
        return self._sender.send(accounts)

    def _trusted_now(self, connection: Any) -> bool:
        """Whether the pumped picture is the server's own now: resynced on this connection, which
        is still up (a drop not yet dispatched shows in ``connected`` and ``generation``)."""
        return self.trusted and connection.connected and connection.generation == self._generation

    def _server_prices(self, held: _Held) -> bool:
        """Whether every price the account was revalued at is the server's: a tick the connection
        delivered, or the read that filled the slot."""
        books = self._books
        return all(
            books[symbol].from_server or books[symbol].seen[slot] >= books[symbol].ticks for symbol, slot in held.slots
        )

    def _positions_now(self, held: _Held) -> dict[int, tuple[float, float]]:
        """{ticket: (profit, current price)} of the account's positions in memory."""
        now: dict[int, tuple[float, float]] = {}
        for symbol, slot in held.slots:
            book = self._books[symbol]
            if book.seen[slot] < book.ticks:
                price = book.bid if book.buy[slot] else book.ask
            else:
                price = float(book.current[slot])
            now[int(book.ticket[slot])] = (float(book.profit[slot]), price)
        return now

    # --- confirming with a real read ---------------------------------------------------------------
    def confirm(self, keys: Iterable[Key]) -> None:
        """Read the accounts from MT5 and evaluate that: the only path that acts."""
        with self._lock:
            watched = [self._held[key].watched for key in keys if key in self._held]
            if not watched:
                return
            try:
                snapshots = self._read([(w.login, w.server) for w in watched])
            except GatewayUnavailable as exc:
                logger.warning("event monitor: read failed", extra={"accounts": len(watched), "error": exc.message})
                return
            for w in watched:
                self.confirmations[(w.login, w.server)] += 1
                self.judged[(w.login, w.server)] += 1
            self._judge_and_hold(watched, snapshots)
