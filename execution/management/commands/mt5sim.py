"""``mt5sim``: operate the MT5 simulator (ARCHITECTURE.md, "Operations contract").

    mt5sim account create --login N --balance B [--server S] [--currency USD] [--leverage 100]
    mt5sim price --symbol SYM --bid X [--ask Y]
    mt5sim positions --login N [--server S]
    mt5sim fault --kind requote|no_connection|market_closed|timeout_after_fill [--symbol SYM] [--login N] [--count K]
    mt5sim feed [--interval-ms 500] [--iterations K]
    mt5sim symbols
    mt5sim market --symbol SYM --open|--closed

Every command prints JSON, one object a line, so scripts and tests can read it.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import close_old_connections, connection

from execution.models import SimFaultKind, SimSymbol
from execution.simulator import SimulatedMetaTrader5
from execution.simulator.service import (
    Quote,
    sim_account_create,
    sim_inject_fault,
    sim_random_walk_step,
    sim_set_market_open,
    sim_set_price,
)
from execution.simulator.symbols import ensure_symbols


def _decimal(value: str) -> Decimal:
    try:
        return Decimal(value)
    except InvalidOperation as exc:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from exc


class Command(BaseCommand):
    help = "Operate the MT5 simulator: accounts, quotes, positions, injected faults and the price feed."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True, parser_class=CommandParser)

        account = sub.add_parser("account", help="simulated trading accounts")
        account_sub = account.add_subparsers(dest="account_action", required=True, parser_class=CommandParser)
        create = account_sub.add_parser("create", help="create an account (an existing one is left unchanged)")
        create.add_argument("--login", type=int, required=True)
        create.add_argument("--balance", type=_decimal, required=True)
        create.add_argument("--server", default="Broker-Server")
        create.add_argument("--currency", default="USD")
        create.add_argument("--leverage", type=int, default=100)
        create.add_argument("--password", default="", help="empty: any password is accepted")

        price = sub.add_parser("price", help="set a quote")
        price.add_argument("--symbol", required=True)
        price.add_argument("--bid", type=_decimal, required=True)
        price.add_argument("--ask", type=_decimal, help="default: bid + the symbol's typical spread")

        positions = sub.add_parser("positions", help="an account's open positions, one JSON object a line")
        positions.add_argument("--login", type=int, required=True)
        positions.add_argument("--server", default=None)

        fault = sub.add_parser("fault", help="make the next order_send calls fail")
        fault.add_argument("--kind", choices=SimFaultKind.values, required=True)
        fault.add_argument("--symbol", default=None)
        fault.add_argument("--login", type=int, default=None)
        fault.add_argument("--count", type=int, default=1)

        feed = sub.add_parser("feed", help="random-walk every quote until stopped")
        feed.add_argument("--interval-ms", type=int, default=500)
        feed.add_argument("--iterations", type=int, default=0, help="0: until stopped")
        feed.add_argument("--seed", type=int, default=None, help="make the walk reproducible")
        feed.add_argument("--symbol", action="append", dest="symbols", help="only these symbols (repeatable)")

        sub.add_parser("symbols", help="every symbol and its quote")

        market = sub.add_parser("market", help="open or close a symbol's trading session")
        market.add_argument("--symbol", required=True)
        state = market.add_mutually_exclusive_group(required=True)
        state.add_argument("--open", action="store_true")
        state.add_argument("--closed", action="store_true")

    def emit(self, data: dict[str, Any]) -> None:
        self.stdout.write(json.dumps(data, default=str, sort_keys=False))

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        try:
            getattr(self, f"do_{action}")(options)
        except (LookupError, ValueError) as exc:
            raise CommandError(str(exc)) from exc

    def do_account(self, options: dict[str, Any]) -> None:
        account, created = sim_account_create(
            options["login"],
            options["balance"],
            server=options["server"],
            currency=options["currency"],
            leverage=options["leverage"],
            password=options["password"],
        )
        self.emit(
            {
                "login": account.login,
                "server": account.server,
                "currency": account.currency,
                "leverage": account.leverage,
                "balance": f"{account.balance:.2f}",
                "created": created,
            }
        )

    def emit_triggered(self, quote: Quote) -> None:
        """One line for each stop or pending order the quote set off."""
        for fired in quote.triggered:
            self.emit({"triggered": fired.kind, "ticket": fired.ticket, "deal": fired.deal, "price": str(fired.price)})

    def do_price(self, options: dict[str, Any]) -> None:
        quote = sim_set_price(options["symbol"], options["bid"], options["ask"])
        self.emit({"symbol": quote.symbol, "bid": str(quote.bid), "ask": str(quote.ask), "time_msc": quote.time_msc})
        self.emit_triggered(quote)

    def do_positions(self, options: dict[str, Any]) -> None:
        terminal = SimulatedMetaTrader5()
        terminal.initialize()
        if not terminal.login(options["login"], server=options["server"]):
            raise CommandError(f"no simulated account {options['login']} ({terminal.last_error()[1]})")
        for position in terminal.positions_get() or ():
            self.emit(position._asdict())

    def do_fault(self, options: dict[str, Any]) -> None:
        fault = sim_inject_fault(
            options["kind"], symbol=options["symbol"], login=options["login"], count=options["count"]
        )
        self.emit(
            {
                "id": fault.pk,
                "kind": fault.kind,
                "symbol": fault.symbol or None,
                "login": fault.login,
                "count": fault.remaining,
            }
        )

    def do_symbols(self, options: dict[str, Any]) -> None:
        ensure_symbols()
        for s in SimSymbol.objects.order_by("name"):
            self.emit(
                {
                    "symbol": s.name,
                    "bid": str(s.bid),
                    "ask": str(s.ask),
                    "digits": s.digits,
                    "filling_mode": s.filling_mode,
                    "sessions_open": s.sessions_open,
                }
            )

    def do_market(self, options: dict[str, Any]) -> None:
        sim_set_market_open(options["symbol"], bool(options["open"]))
        self.emit({"symbol": options["symbol"], "sessions_open": bool(options["open"])})

    def do_feed(self, options: dict[str, Any]) -> None:
        interval = max(options["interval_ms"], 0) / 1000
        iterations = options["iterations"]
        rng = random.Random(options["seed"])  # price noise, not security
        verbose = options["verbosity"] >= 2
        done = 0
        try:
            while not iterations or done < iterations:
                # A feed runs for days: drop connections the database closed meanwhile (never
                # inside a caller's transaction, where Django would close a healthy one).
                if not connection.in_atomic_block:
                    close_old_connections()
                quotes = sim_random_walk_step(options["symbols"], rng=rng)
                done += 1
                for q in quotes:
                    if verbose:
                        self.emit({"symbol": q.symbol, "bid": str(q.bid), "ask": str(q.ask)})
                    self.emit_triggered(q)
                if not iterations or done < iterations:
                    time.sleep(interval)
        except KeyboardInterrupt:
            pass
        self.emit({"feed": "stopped", "steps": done})
