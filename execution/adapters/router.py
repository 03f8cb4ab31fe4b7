"""``TerminalRouter``: one Gateway over many terminals, each call sent to the owner of its account's terminal.

Every call names its account; the router asks ``execution.terminals`` which terminal serves it
and hands the call to that terminal's owner (``execution.owners``): this process, through the
terminal's own adapter (built on first use, one per terminal, kept for the life of the process),
or the process that holds the terminal's lease. Callers see the plain ``Gateway`` interface.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from django.db import connection

from execution.gateway import (
    DONE,
    AccountSnapshot,
    Deal,
    Gateway,
    GatewayUnavailable,
    PendingOrder,
    Position,
    Side,
    SymbolInfo,
    TradeResult,
)
from execution.owners import RUN, Owners, Priority, call_priority, current_priority
from execution.terminals import TerminalConfig

Address = tuple[Any, ...]  # TerminalConfig.address

# While a function sent to a terminal's owner runs there (``run_on_owner``): the account it was
# sent for and that terminal. Its gateway calls for that account go to that terminal (whose owner
# we are) without asking the database again which terminal serves the account.
_running_on: contextvars.ContextVar[tuple[int, str, str] | None] = contextvars.ContextVar(
    "terminal_running_on", default=None
)
# A command sent for an account this long after a bulk read of it (the risk monitor's protective
# close) goes to the terminal that read showed it on, without asking the database again.
READ_FROM_SECONDS = 1.0
# Closes sent ahead at once (``close_ahead``): the threads that wait for their owners' answers.
CLOSE_AHEAD_THREADS = 8
# A close sent ahead is remembered this long after its answer came (``closes_sent_ahead``).
CLOSE_AHEAD_KEPT_SECONDS = 120.0


class TerminalRouter(Gateway):
    def __init__(
        self,
        backend: str,
        *,
        build: Callable[[TerminalConfig], Gateway],
        resolve: Callable[[int, str], TerminalConfig],
        resolve_many: Callable[[Iterable[tuple[int, str]]], dict[tuple[int, str], TerminalConfig]],
        configured: Callable[[], list[TerminalConfig]],
        named: Callable[[str], TerminalConfig | None],
        owned: bool = True,
    ) -> None:
        """``build`` makes a terminal's adapter; ``resolve``/``resolve_many`` say which terminal
        serves an account and ``named`` which one has a name (for calls other processes send
        here); ``configured`` lists the terminals health checks before any was used. ``owned``:
        every call goes through the terminal's owner (off only for a router over adapters no other
        process can reach)."""
        self.backend = backend
        self._build = build
        self._resolve = resolve
        self._resolve_many = resolve_many
        self._configured = configured
        self._named = named
        self._lock = threading.Lock()
        self._gateways: dict[Address, tuple[str, Gateway]] = {}
        self._configs: dict[str, TerminalConfig] = {}
        self.owners = Owners(self._run_local) if owned else None
        self._readers: ThreadPoolExecutor | None = None
        self._own_reader: ThreadPoolExecutor | None = None  # this process's own terminals, the second thread
        # The terminal each account was read from at the last bulk read, and when (monotonic).
        self._read_from: dict[tuple[int, str], tuple[TerminalConfig, float]] = {}
        self._closers: ThreadPoolExecutor | None = None
        # The closes sent ahead from this process: by tag, {ticket: its future}, and when sent.
        self._sent_ahead: dict[str, tuple[float, dict[int, Future[ClosedAhead]]]] = {}
        # The closes sent ahead that this process ran as their terminal's owner and that got a
        # final answer: by tag, when, and their tickets.
        self._answered_here: dict[str, tuple[float, set[int]]] = {}

    # --- routing ----------------------------------------------------------------------------
    def gateway_of(self, config: TerminalConfig) -> Gateway:
        """This process's own adapter of the terminal (for its owner)."""
        found = self._gateways.get(config.address)
        if found is None:
            with self._lock:
                found = self._gateways.get(config.address)
                if found is None:
                    found = self._gateways[config.address] = (config.name, self._build(config))
        return found[1]

    def terminals(self) -> dict[str, Gateway]:
        """The terminals this process has driven so far, by name."""
        with self._lock:
            return dict(self._gateways.values())

    def _config_named(self, name: str) -> TerminalConfig:
        config = self._configs.get(name) or self._named(name)
        if config is None:
            raise GatewayUnavailable(f"no terminal named {name!r}")
        self._configs[name] = config
        return config

    def _call(self, login: int, server: str, method: str, *args: Any, **kwargs: Any) -> Any:
        running_on = _running_on.get()
        if self.owners is not None and running_on is not None and running_on[:2] == (login, server):
            return self.owners.call(running_on[2], method, (login, server, *args), kwargs)
        config = self._resolve(login, server)
        self._configs[config.name] = config
        if self.owners is None:
            return getattr(self.gateway_of(config), method)(login, server, *args, **kwargs)
        return self.owners.call(config.name, method, (login, server, *args), kwargs)

    def run_on_owner(self, login: int, server: str, function: Callable[..., Any], *args: Any) -> Any:
        """``function(gateway, *args)`` run by the owner of the account's terminal, ``gateway``
        being the owner's router: every gateway call it makes is local there. One round trip
        to the owner however many calls it makes; ``function`` and ``args`` travel pickled (a
        module-level function, by reference). There its calls for this account go to this
        terminal without looking up again which terminal serves the account; nor is it looked
        up here when this process read the account in bulk less than ``READ_FROM_SECONDS`` ago
        (the risk monitor's protective close goes to the terminal the breach was read from)."""
        config = self._just_read_from(login, server) or self._resolve(login, server)
        return self._run_on(config, login, server, function, *args)

    def _just_read_from(self, login: int, server: str) -> TerminalConfig | None:
        """The terminal the account was read from by this process's last bulk read, if that was
        less than ``READ_FROM_SECONDS`` ago."""
        read = self._read_from.get((login, server))
        if read is not None and time.monotonic() - read[1] < READ_FROM_SECONDS:
            return read[0]
        return None

    def _run_on(self, config: TerminalConfig, login: int, server: str, function: Callable[..., Any], *args: Any) -> Any:
        self._configs[config.name] = config
        if self.owners is None:
            return function(self, *args)
        return self.owners.call(config.name, RUN, (function, *args), {"account": (login, server)})

    # --- closing ahead (risk.ahead: the polling monitor's close before its record) -----------------
    def close_ahead(self, login: int, server: str, position: Position, *, tag: str) -> Future[ClosedAhead] | None:
        """Send a market close of the whole ``position`` under ``tag`` and return without waiting:
        the close goes, at the fast lane's priority, to the owner of the terminal this process's
        last bulk read found the account on (less than ``READ_FROM_SECONDS`` ago), exactly as a
        protective command's attempt does (``run_on_owner``): the owner's adapter reads the
        position, closes it, and checks the terminal still holds the account after the trade.
        Returns the close's future (``close_outcome`` says what became of it), or None when the
        account was not read just now (nothing was sent: the command's pursuit closes it)."""
        config = self._just_read_from(login, server)
        if config is None:
            return None
        with self._lock:
            if self._closers is None:
                self._closers = ThreadPoolExecutor(max_workers=CLOSE_AHEAD_THREADS, thread_name_prefix="close-ahead")
            closers = self._closers
            now = time.monotonic()
            _forget_old(self._sent_ahead, now)
        future = closers.submit(self._close_on, config, login, server, position.ticket, tag)
        with self._lock:
            self._sent_ahead.setdefault(tag, (now, {}))[1][position.ticket] = future
        return future

    def _close_on(self, config: TerminalConfig, login: int, server: str, ticket: int, tag: str) -> ClosedAhead:
        with call_priority(Priority.FAST):  # protection: before every waiting read and normal command
            return self._run_on(config, login, server, close_on_owner, login, server, ticket, tag)

    @staticmethod
    def close_outcome(handle: Future[ClosedAhead]) -> Literal["filled", "refused", "in_flight"]:
        """What a ``close_ahead`` came to so far, without waiting: ``filled`` (in full or in part),
        ``refused`` (a final answer that filled nothing), or ``in_flight`` (no answer yet, or the
        answer was lost: the owner went, the request may have executed; only a deal found by its
        tag can tell)."""
        if not handle.done() or handle.exception() is not None:
            return "in_flight"
        result = handle.result().result
        if result.outcome == DONE:
            return "filled"
        return "in_flight" if result.maybe_executed else "refused"

    def close_answered(self, tag: str, ticket: int) -> None:
        """A close sent ahead under ``tag`` got its final answer here, on its terminal's owner."""
        now = time.monotonic()
        with self._lock:
            _forget_old(self._answered_here, now)
            self._answered_here.setdefault(tag, (now, set()))[1].add(ticket)

    def closes_answered(self, tag: str) -> set[int]:
        """The tickets whose close sent ahead under ``tag`` this process ran as the terminal's
        owner and got a final answer for (a command's attempt run here need not wait for them)."""
        with self._lock:
            found = self._answered_here.get(tag)
            return set(found[1]) if found is not None else set()

    def closes_sent_ahead(self, tag: str) -> dict[int, Future[ClosedAhead]]:
        """The closes this process sent ahead under ``tag``, by ticket (none when another did)."""
        with self._lock:
            found = self._sent_ahead.get(tag)
            return dict(found[1]) if found is not None else {}

    def _run_local(self, name: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Run a call on our own adapter of the terminal (we own it)."""
        if method == RUN:  # each gateway call it makes takes the terminal (SELF_LOCKING)
            function, *rest = args
            login, server = kwargs["account"]
            token = _running_on.set((login, server, name))
            try:
                return function(self, *rest)
            finally:
                _running_on.reset(token)
        gateway = self.gateway_of(self._config_named(name))
        if method == "account_snapshots":  # one account at a time on the terminal (SELF_LOCKING)
            assert self.owners is not None
            out: dict[tuple[int, str], AccountSnapshot | Exception] = {}
            for login, server in args[0]:
                try:
                    with self.owners.driving(name):
                        out[(login, server)] = gateway.account_snapshot(login, server)
                except GatewayUnavailable as exc:
                    out[(login, server)] = exc
            return out
        return getattr(gateway, method)(*args, **kwargs)

    # --- reads --------------------------------------------------------------------------------
    def account_snapshot(self, login: int, server: str) -> AccountSnapshot:
        return self._call(login, server, "account_snapshot")

    def account_snapshots(
        self, accounts: Iterable[tuple[int, str]]
    ) -> dict[tuple[int, str], AccountSnapshot | Exception]:
        return dict(self.account_snapshots_stream(accounts))

    def account_snapshots_stream(
        self, accounts: Iterable[tuple[int, str]]
    ) -> Iterator[tuple[tuple[int, str], AccountSnapshot | Exception]]:
        """Each terminal's accounts read by its owner, every terminal at the same time (one call
        per terminal); the accounts come as their terminal answers. The terminals are looked up
        together, in one query."""
        keys = list(accounts)
        configs = self._resolve_many(keys)
        read_at = time.monotonic()
        self._read_from = {key: (config, read_at) for key, config in configs.items()}
        by_terminal: dict[str, list[tuple[int, str]]] = {}
        for key in keys:
            config = configs[key]
            self._configs[config.name] = config
            by_terminal.setdefault(config.name, []).append(key)
        if self.owners is None:
            for name, group in by_terminal.items():
                gateway = self.gateway_of(self._configs[name])
                yield from ((key, _read(gateway, key)) for key in group)
            return
        owners = self.owners
        here = [name for name in by_terminal if owners.owns(name) or owners.own_if_free(name)]
        elsewhere = {name: group for name, group in by_terminal.items() if name not in here}
        futures = {}
        priority = current_priority()
        if len(here) > 1 and not connection.in_atomic_block:
            # Ours: every other one on a second thread (a risk monitor hosting its terminals reads
            # them two at a time, not one after the other; more would leave a protective close
            # sharing the process with as many reads). Inside a transaction all on this thread,
            # which sees what the transaction wrote.
            if self._own_reader is None:
                self._own_reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="terminal-own-reads")
            there, here = here[1::2], here[::2]
            futures = {
                self._own_reader.submit(self._read_terminal, name, by_terminal[name], priority): by_terminal[name]
                for name in there
            }
        if elsewhere:
            # Every other owner reads at the same time, on threads that only wait for answers.
            if self._readers is None:
                self._readers = ThreadPoolExecutor(max_workers=16, thread_name_prefix="terminal-reads")
            futures.update(
                {
                    self._readers.submit(self._read_terminal, name, group, priority): group
                    for name, group in elsewhere.items()
                }
            )
        for name in here:  # ours, on this thread (its transaction, its connection)
            yield from self._read_terminal(name, by_terminal[name]).items()
            for future in [future for future in futures if future.done()]:  # and those read meanwhile
                yield from _answered(future, futures.pop(future))
        for future in as_completed(futures):
            yield from _answered(future, futures[future])

    def _read_terminal(
        self, name: str, group: list[tuple[int, str]], priority: Any = None
    ) -> dict[tuple[int, str], AccountSnapshot | Exception]:
        assert self.owners is not None
        if priority is None:
            return self.owners.call(name, "account_snapshots", (group,), {})
        with call_priority(priority):
            return self.owners.call(name, "account_snapshots", (group,), {})

    def position(self, login: int, server: str, ticket: int) -> Position | None:
        return self._call(login, server, "position", ticket)

    def netting_position(self, login: int, server: str, symbol: str) -> Position | None:
        return self._call(login, server, "netting_position", symbol)

    def symbol_info(self, login: int, server: str, symbol: str) -> SymbolInfo | None:
        return self._call(login, server, "symbol_info", symbol)

    def deals_by_tag(self, login: int, server: str, *, tag: str, since: datetime) -> tuple[Deal, ...]:
        return self._call(login, server, "deals_by_tag", tag=tag, since=since)

    def orders_by_tag(self, login: int, server: str, *, tag: str, since: datetime) -> tuple[PendingOrder, ...]:
        return self._call(login, server, "orders_by_tag", tag=tag, since=since)

    def positions_by_tag(self, login: int, server: str, *, tag: str) -> tuple[Position, ...]:
        return self._call(login, server, "positions_by_tag", tag=tag)

    # --- trading ------------------------------------------------------------------------------
    def open_position(
        self,
        login: int,
        server: str,
        *,
        symbol: str,
        side: Side,
        volume: Decimal,
        price: Decimal | None = None,
        sl: Decimal | None = None,
        tp: Decimal | None = None,
        deviation: int = 20,
        tag: str,
    ) -> TradeResult:
        return self._call(
            login,
            server,
            "open_position",
            symbol=symbol,
            side=side,
            volume=volume,
            price=price,
            sl=sl,
            tp=tp,
            deviation=deviation,
            tag=tag,
        )

    def close_position(
        self, login: int, server: str, *, ticket: int, volume: Decimal | None = None, deviation: int = 20, tag: str
    ) -> TradeResult:
        return self._call(login, server, "close_position", ticket=ticket, volume=volume, deviation=deviation, tag=tag)

    def modify_position(
        self, login: int, server: str, *, ticket: int, sl: Decimal | None = None, tp: Decimal | None = None, tag: str
    ) -> TradeResult:
        return self._call(login, server, "modify_position", ticket=ticket, sl=sl, tp=tp, tag=tag)

    def place_pending_order(
        self,
        login: int,
        server: str,
        *,
        symbol: str,
        side: Side,
        kind: Literal["limit", "stop"],
        volume: Decimal,
        price: Decimal,
        sl: Decimal | None = None,
        tp: Decimal | None = None,
        tag: str,
    ) -> TradeResult:
        return self._call(
            login,
            server,
            "place_pending_order",
            symbol=symbol,
            side=side,
            kind=kind,
            volume=volume,
            price=price,
            sl=sl,
            tp=tp,
            tag=tag,
        )

    def cancel_order(self, login: int, server: str, *, ticket: int, tag: str) -> TradeResult:
        return self._call(login, server, "cancel_order", ticket=ticket, tag=tag)

    # --- health -------------------------------------------------------------------------------
    def _terminal_status(self, config: TerminalConfig) -> dict[str, Any]:
        self._configs[config.name] = config
        if self.owners is None:
            return self.gateway_of(config).status()
        try:
            with call_priority(current_priority()):
                return self.owners.call(config.name, "status", (), {}, timeout=STATUS_TIMEOUT_SECONDS)
        except GatewayUnavailable as exc:
            return {"backend": self.backend, "available": False, "detail": exc.message}

    def terminal_status(self, name: str) -> dict[str, Any]:
        """One terminal's status, as its owner sees it."""
        return self._terminal_status(self._config_named(name))

    def status(self) -> dict[str, Any]:
        """Every terminal this process has used (or, before any was, every configured one), as
        its owner sees it: the backend is available when each of them is."""
        names = set(self._configs)
        try:
            configs = {c.name: c for c in self._configured()} if not names else {}
        except Exception as exc:  # health must answer, whatever the database did
            return {"backend": self.backend, "available": False, "detail": f"cannot read the terminals: {exc}"}
        configs.update({name: self._configs[name] for name in names})
        statuses = {name: self._terminal_status(config) for name, config in sorted(configs.items())}
        return {
            "backend": self.backend,
            # No terminal yet (the simulator before any account was used): nothing is down.
            "available": all(bool(s.get("available")) for s in statuses.values()),
            "detail": "; ".join(f"{name}: {s.get('detail', '')}" for name, s in statuses.items())
            or "no terminal in use yet",
            # Health is degraded when AutoTrading or Python trading is off on any terminal.
            "trade_allowed": all(s.get("trade_allowed") is not False for s in statuses.values()),
            "trade_api_disabled": any(bool(s.get("trade_api_disabled")) for s in statuses.values()),
            "terminals": statuses,
        }


# How long health waits for a terminal's owner to say how its terminal is.
STATUS_TIMEOUT_SECONDS = 2.0


def _forget_old(by_tag: dict[str, tuple[float, Any]], now: float) -> None:
    """Drop the tags remembered more than ``CLOSE_AHEAD_KEPT_SECONDS`` (call with the lock held)."""
    for tag in [t for t, (at, _) in by_tag.items() if now - at > CLOSE_AHEAD_KEPT_SECONDS]:
        del by_tag[tag]


@dataclass(frozen=True)
class ClosedAhead:
    """What became of a close sent ahead, as its terminal's owner saw it: MT5's answer, and the
    closing deal when it filled (read there by its tag, right after)."""

    result: TradeResult
    deal: Deal | None = None


def close_on_owner(gateway: Gateway, login: int, server: str, ticket: int, tag: str) -> ClosedAhead:
    """A close sent ahead, run by the terminal's owner (``TerminalRouter.close_ahead``). A final
    answer is remembered there: a command's attempt run there after it need not wait for it. A
    fill's deal is read at once, by the tag, as a command's attempt would read it."""
    result = gateway.close_position(login, server, ticket=ticket, tag=tag)
    answered = getattr(gateway, "close_answered", None)
    if answered is not None and not result.maybe_executed:
        answered(tag, ticket)
    deal = None
    if result.outcome == DONE and result.deal:
        since = datetime.now(UTC) - timedelta(minutes=1)
        deal = next(
            (d for d in gateway.deals_by_tag(login, server, tag=tag, since=since) if d.ticket == result.deal), None
        )
    return ClosedAhead(result, deal)


def _answered(
    future: Future[dict[tuple[int, str], AccountSnapshot | Exception]], group: list[tuple[int, str]]
) -> Iterator[tuple[tuple[int, str], AccountSnapshot | Exception]]:
    """A terminal's read, done: its accounts, or each with the error that failed the whole read."""
    try:
        yield from future.result().items()
    except GatewayUnavailable as exc:
        yield from ((key, exc) for key in group)


def _read(gateway: Gateway, key: tuple[int, str]) -> AccountSnapshot | Exception:
    try:
        return gateway.account_snapshot(*key)
    except GatewayUnavailable as exc:
        return exc
