"""``EventMonitor``: the event-driven risk monitor for the Manager API backend (issue #17 item 3,
a first version; the polling ``Monitor`` stays the safety net and the terminal backends' monitor).

It listens to the manager connection (``execution.adapters.manager.ManagerConnection``) and keeps
each watched account's last MT5 snapshot in memory:

- **A tick** revalues, in memory, only the positions on its symbol, of only the accounts holding
  it (an index symbol -> accounts), and runs the rule table (``rules.evaluate``, pure) on the
  revalued picture. Quiet: nothing else happens (no database, no MT5 call; a risk state that
  only moves, a new high water mark, is kept in memory). A breach: the account is read from MT5
  at once and that real
  snapshot goes through ``engine.risk_evaluate_snapshot`` (persisted, protective actions raised
  exactly once, as by the polling monitor). The in-memory revaluation only decides when to
  look; it never declares a breach itself.
- **A position, order, deal or user event** reads that account afresh and evaluates it.
- **A (re)connect** makes the monitor distrust everything: it ignores events until it has read
  every account it owns again (``on_resync``) and evaluated them, so a breach that happened
  while the link was down is found by the resync, not missed.

Several monitors share the accounts as the polling ones do (``owns``: the rendezvous hash of
``risk.monitor.owner_of``), so none is watched twice. Revaluation converts a price move into
the account's currency with the symbol's contract size (profit currency = the account's: x 1;
base currency = the account's: / price; otherwise the position's own profit-per-price-unit from
its last snapshot), which is exact for the first two and close for the rest; a real read
confirms before anything is acted on.

The polling ``risk.monitor.Monitor`` starts one on its own accounts when the backend is the
Manager API (``Monitor.follow_events``) and resyncs it when the accounts or the monitors change.

Not yet: the benchmark of issue #17, and a vectorised revaluation (numpy, per-symbol equity
deltas compared with the floors in bulk) for 10,000 accounts: this one loops over the holders of
a symbol in Python, and a breached account costs an MT5 read and a database round trip.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.utils import timezone

from execution.gateway import AccountSnapshot, Gateway, GatewayUnavailable, Position
from policies.models import AccountRisk, TradingAccount
from risk import rules
from risk.engine import (
    WatchedAccount,
    account_view,
    risk_evaluate_snapshot,
    risk_evaluate_snapshots,
    state_from_row,
    watched_accounts,
)

logger = logging.getLogger("bridge.risk")

Key = tuple[int, str]


@dataclass
class _Held:
    watched: WatchedAccount
    snapshot: AccountSnapshot
    state: rules.RiskState | None


def _price(value: Any) -> Decimal:
    return Decimal(repr(float(value)))


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
        self._by_symbol: dict[str, set[Key]] = {}
        self._contracts: dict[str, tuple[Decimal, str, str]] = {}
        self._lock = threading.RLock()
        # What it did, for health and tests.
        self.resyncs = 0
        self.revaluations: Counter[Key] = Counter()
        self.confirmations: Counter[Key] = Counter()

    def start(self) -> None:
        """Listen, and resync now if the connection is already up (else its connect will)."""
        connection = self.gateway.conn  # type: ignore[attr-defined]
        connection.listen(self)
        if connection.connected:
            self.resync()

    # --- the listener ---------------------------------------------------------------------------
    def on_resync(self, connection: Any) -> None:
        self.resync()

    def on_event(self, kind: str, args: tuple[Any, ...]) -> None:
        if kind == "disconnect":
            self.trusted = False
            return
        if not self.trusted:
            return  # the resync after the connect will look at everything
        try:
            if kind == "tick":
                symbol, tick = args
                self._tick(str(symbol), tick)
            elif args and hasattr(args[0], "Login"):
                key = self._by_login.get(int(args[0].Login))
                if key is not None:
                    self._refresh(key)
        except Exception:  # one bad event must not stop the others
            logger.exception("event monitor: %s failed", kind)

    # --- resync -------------------------------------------------------------------------------------
    def resync(self) -> None:
        """Read every owned account again and evaluate it; trust the state only after that."""
        with self._lock:
            self.trusted = False
            watched = [w for w in watched_accounts() if self.owns(w.pk)]
            keys = [(w.login, w.server) for w in watched]
            try:
                snapshots = self.gateway.account_snapshots(keys)
            except GatewayUnavailable as exc:
                logger.warning("event monitor: resync failed", extra={"error": exc.message})
                return
            risk_evaluate_snapshots(accounts=watched, snapshots=snapshots, now=self.now())
            states = {
                row.account_id: state_from_row(row)
                for row in AccountRisk.objects.filter(account_id__in=[w.pk for w in watched])
            }
            self._held.clear()
            self._by_login.clear()
            self._by_symbol.clear()
            for w in watched:
                snapshot = snapshots.get((w.login, w.server))
                if isinstance(snapshot, AccountSnapshot):
                    self._hold(w, snapshot, states.get(w.pk))
            self.resyncs += 1
            self.trusted = True

    def _hold(self, watched: WatchedAccount, snapshot: AccountSnapshot, state: rules.RiskState | None) -> None:
        key = (watched.login, watched.server)
        old = self._held.get(key)
        if old is not None:
            for position in old.snapshot.positions:
                self._by_symbol.get(position.symbol, set()).discard(key)
        self._held[key] = _Held(watched, snapshot, state)
        self._by_login[watched.login] = key
        for position in snapshot.positions:
            self._by_symbol.setdefault(position.symbol, set()).add(key)

    # --- ticks ----------------------------------------------------------------------------------------
    def _tick(self, symbol: str, tick: Any) -> None:
        bid, ask = _price(tick.bid), _price(tick.ask)
        with self._lock:
            for key in list(self._by_symbol.get(symbol, ())):
                held = self._held[key]
                held.snapshot = self._revalued(held.snapshot, symbol, bid, ask)
                self.revaluations[key] += 1
                if self._breached(held):
                    self._refresh(key)

    def _contract(self, snapshot: AccountSnapshot, symbol: str) -> tuple[Decimal, str, str]:
        if symbol not in self._contracts:
            info = self.gateway.symbol_info(snapshot.login, snapshot.server, symbol)
            if info is None:
                raise GatewayUnavailable(f"symbol {symbol} is unknown to the server")
            self._contracts[symbol] = (info.contract_size, info.currency_profit, info.currency_base)
        return self._contracts[symbol]

    def _per_price_unit(self, snapshot: AccountSnapshot, p: Position, price: Decimal) -> Decimal:
        """The position's profit change per unit of price move, in the account's currency."""
        contract, profit_ccy, base_ccy = self._contract(snapshot, p.symbol)
        sign = 1 if p.side == "buy" else -1
        if profit_ccy == snapshot.currency:
            return sign * p.volume * contract
        if base_ccy == snapshot.currency and price:
            return sign * p.volume * contract / price
        moved = p.price_current - p.price_open
        return p.profit / moved if moved else sign * p.volume * contract

    def _revalued(self, snapshot: AccountSnapshot, symbol: str, bid: Decimal, ask: Decimal) -> AccountSnapshot:
        delta = Decimal(0)
        positions = []
        for p in snapshot.positions:
            if p.symbol != symbol:
                positions.append(p)
                continue
            price = bid if p.side == "buy" else ask
            change = (price - p.price_current) * self._per_price_unit(snapshot, p, price)
            step = Decimal(1).scaleb(-snapshot.currency_digits)
            profit = (p.profit + change).quantize(step)
            delta += profit - p.profit
            positions.append(replace(p, price_current=price, profit=profit))
        return replace(
            snapshot,
            equity=snapshot.equity + delta,
            profit=snapshot.profit + delta,
            margin_free=snapshot.margin_free + delta,
            positions=tuple(positions),
            observed_at=self.now(),
        )

    def _breached(self, held: _Held) -> bool:
        """Would the rule table see a breach in this picture? A state that only moves (a new high
        water mark) is kept in memory for the next tick's floors and left to the polling monitor
        to persist: no read for it."""
        if held.state is None or held.state.policy_version != held.watched.policy.policy_version:
            return True
        evaluation = rules.evaluate(account_view(held.snapshot), held.watched.policy, held.state)
        if evaluation.breaches:
            return True
        held.state = evaluation.state
        return False

    # --- confirming with a real read ---------------------------------------------------------------
    def _refresh(self, key: Key) -> None:
        """Read the account from MT5 and evaluate that: the only path that acts."""
        with self._lock:
            held = self._held[key]
            try:
                mt5 = self.gateway.account_snapshot(*key)
            except GatewayUnavailable as exc:
                logger.warning("event monitor: read failed", extra={"account": key[0], "error": exc.message})
                return
            self.confirmations[key] += 1
            account = TradingAccount.objects.select_related("current_policy", "tenant").filter(pk=held.watched.pk)
            found = account.first()
            if found is None:
                return
            risk_evaluate_snapshot(account=found, mt5=mt5, now=self.now())
            row = AccountRisk.objects.filter(account_id=held.watched.pk).first()
            self._hold(held.watched, mt5, state_from_row(row) if row is not None else None)
