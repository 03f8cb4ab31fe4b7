"""``mt5sim``: operate the MT5 simulator (ARCHITECTURE.md, "Operations contract").

    mt5sim account create --login N --balance B [--server S] [--currency USD] [--leverage 100] [--terminal NAME]
                          [--margin-mode hedging|netting]
    mt5sim account show --login N [--server S]
    mt5sim price --symbol SYM --bid X [--ask Y]
    mt5sim positions --login N [--server S]
    mt5sim trade --login N --symbol SYM --side buy|sell --volume V [--sl X] [--tp Y] [--filling fok|ioc|return]
    mt5sim fault --kind KIND [--symbol SYM] [--login N] [--count K | --seconds S]
    mt5sim fault --clear [--login N]
    mt5sim feed [--interval-ms 500] [--iterations K]
    mt5sim symbols
    mt5sim market --symbol SYM --open|--closed

Every command prints JSON, one object a line, so scripts and tests can read it. What it prints
of MT5's records (positions, a quote's ``time_msc``) is what a terminal shows: times in the
simulated server's wall clock, UTC + SIM_SERVER_UTC_OFFSET_HOURS, as MT5 stamps them. A fault's
``until_msc`` is the simulator's own clock, UTC.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import close_old_connections, connection, transaction

from execution.adapters.official.conversion import choose_filling
from execution.models import SimFaultKind, SimSymbol
from execution.simulator import SimulatedMetaTrader5
from execution.simulator import constants as c
from execution.simulator.service import (
    MARGIN_MODES,
    Quote,
    sim_account_create,
    sim_account_state,
    sim_clear_faults,
    sim_inject_fault,
    sim_random_walk_step,
    sim_set_market_open,
    sim_set_price,
)
from execution.simulator.stamps import server_msc, server_offset_msc
from execution.simulator.symbols import ensure_symbols
from execution.terminals import get_terminal, terminal_pin

FILLINGS = {"fok": c.ORDER_FILLING_FOK, "ioc": c.ORDER_FILLING_IOC, "return": c.ORDER_FILLING_RETURN}


def _decimal(value: str) -> Decimal:
    try:
        return Decimal(value)
    except InvalidOperation as exc:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from exc


class Command(BaseCommand):
    help = (
        "Operate the MT5 simulator: accounts, quotes, positions, injected faults and the price feed. "
        "MT5 records print as a terminal shows them: times in the server's wall clock "
        "(UTC + SIM_SERVER_UTC_OFFSET_HOURS)."
    )

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
        create.add_argument(
            "--terminal", default=None, help="pin the account to this configured terminal (default: a private one)"
        )
        create.add_argument(
            "--margin-mode",
            choices=tuple(MARGIN_MODES),
            default="hedging",
            help="hedging: a position per deal in; netting: one position per symbol",
        )
        show = account_sub.add_parser("show", help="the account as JSON: money, margin mode, rights")
        show.add_argument("--login", type=int, required=True)
        show.add_argument("--server", default=None)

        price = sub.add_parser("price", help="set a quote (its time_msc printed in server time, as a tick's)")
        price.add_argument("--symbol", required=True)
        price.add_argument("--bid", type=_decimal, required=True)
        price.add_argument("--ask", type=_decimal, help="default: bid + the symbol's typical spread")

        positions = sub.add_parser(
            "positions",
            help="an account's open positions as positions_get() returns them, one JSON object a line; "
            "time, time_msc, time_update are server time (UTC + SIM_SERVER_UTC_OFFSET_HOURS)",
        )
        positions.add_argument("--login", type=int, required=True)
        positions.add_argument("--server", default=None)

        trade = sub.add_parser("trade", help="the trader's own terminal sends a market order (not the bridge)")
        trade.add_argument("--login", type=int, required=True)
        trade.add_argument("--server", default=None)
        trade.add_argument("--symbol", required=True)
        trade.add_argument("--side", choices=("buy", "sell"), required=True)
        trade.add_argument("--volume", type=_decimal, required=True)
        trade.add_argument("--sl", type=_decimal, default=None)
        trade.add_argument("--tp", type=_decimal, default=None)
        trade.add_argument("--filling", choices=tuple(FILLINGS), default=None, help="default: what the symbol allows")

        fault = sub.add_parser("fault", help="make the next order_send calls fail, or every call for a while")
        fault.add_argument("--kind", choices=SimFaultKind.values)
        fault.add_argument("--symbol", default=None)
        fault.add_argument("--login", type=int, default=None)
        how = fault.add_mutually_exclusive_group()
        how.add_argument("--count", type=int, default=None, help="the next K matching order_send calls (default 1)")
        how.add_argument("--seconds", type=float, default=None, help="every matching call for S seconds (an outage)")
        how.add_argument("--clear", action="store_true", help="end the pending faults and outages (--login: its own)")

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
        if options["account_action"] == "show":
            self.emit(sim_account_state(options["login"], options["server"]))
            return
        with transaction.atomic():
            # An unknown terminal or a pin elsewhere refuses before anything is created.
            terminal = get_terminal(options["terminal"]) if options["terminal"] else None
            account, created = sim_account_create(
                options["login"],
                options["balance"],
                server=options["server"],
                currency=options["currency"],
                leverage=options["leverage"],
                password=options["password"],
                margin_mode=options["margin_mode"],
            )
            if terminal is not None:
                terminal_pin(terminal, [(account.login, account.server)])
        line = {
            "login": account.login,
            "server": account.server,
            "currency": account.currency,
            "leverage": account.leverage,
            "balance": f"{account.balance:.2f}",
            "created": created,
        }
        if terminal is not None:
            line["terminal"] = terminal.name
        self.emit(line)

    def emit_triggered(self, quote: Quote) -> None:
        """One line for each stop, pending order or stop-out the quote set off."""
        for fired in quote.triggered:
            self.emit({"triggered": fired.kind, "ticket": fired.ticket, "deal": fired.deal, "price": str(fired.price)})

    def do_price(self, options: dict[str, Any]) -> None:
        quote = sim_set_price(options["symbol"], options["bid"], options["ask"])
        stamp = server_msc(quote.time_msc, server_offset_msc())  # the tick's time as a terminal shows it
        self.emit({"symbol": quote.symbol, "bid": str(quote.bid), "ask": str(quote.ask), "time_msc": stamp})
        self.emit_triggered(quote)

    def do_positions(self, options: dict[str, Any]) -> None:
        # An operator's own terminal: reading here switches no terminal the bridge uses.
        terminal = SimulatedMetaTrader5()
        terminal.initialize(f"operator-{options['login']}")
        if not terminal.login(options["login"], server=options["server"]):
            raise CommandError(f"no simulated account {options['login']} ({terminal.last_error()[1]})")
        for position in terminal.positions_get() or ():
            self.emit(position._asdict())

    def do_trade(self, options: dict[str, Any]) -> None:
        """A market order from the trader's own terminal: magic 0, comment "manual", reason
        CLIENT, through the simulated terminal's order_send; the bridge knows nothing of it."""
        terminal = SimulatedMetaTrader5(manual=True)
        terminal.initialize(f"trader-{options['login']}")  # the trader's own terminal, at home
        if not terminal.login(options["login"], server=options["server"]):
            raise CommandError(f"cannot log into {options['login']}: {terminal.last_error()}")
        symbol = terminal.symbol_info(options["symbol"])
        if symbol is None:
            raise CommandError(f"unknown symbol {options['symbol']!r}")
        is_buy = options["side"] == "buy"
        filling = FILLINGS[options["filling"]] if options["filling"] else choose_filling(symbol.filling_mode)
        request: dict[str, Any] = {
            "action": c.TRADE_ACTION_DEAL,
            "symbol": symbol.name,
            "volume": float(options["volume"]),
            "type": c.ORDER_TYPE_BUY if is_buy else c.ORDER_TYPE_SELL,
            "price": symbol.ask if is_buy else symbol.bid,
            "deviation": 20,
            "magic": 0,
            "comment": "manual",
            "type_time": c.ORDER_TIME_GTC,
            "type_filling": filling,
        }
        if options["sl"] is not None:
            request["sl"] = float(options["sl"])
        if options["tp"] is not None:
            request["tp"] = float(options["tp"])
        result = terminal.order_send(request)
        if result is None:
            code, text = terminal.last_error()
            raise CommandError(f"order_send returned None: ({code}) {text}")
        self.emit(
            {
                "retcode": result.retcode,
                "deal": result.deal,
                "order": result.order,
                "volume": result.volume,
                "price": result.price,
                "comment": result.comment,
            }
        )

    def do_fault(self, options: dict[str, Any]) -> None:
        if options["clear"]:
            if options["kind"] or options["symbol"]:
                raise CommandError("--clear takes only --login")
            self.emit({"cleared": sim_clear_faults(login=options["login"]), "login": options["login"]})
            return
        if not options["kind"]:
            raise CommandError("--kind is required (or --clear)")
        fault = sim_inject_fault(
            options["kind"],
            symbol=options["symbol"],
            login=options["login"],
            count=1 if options["count"] is None else options["count"],
            seconds=options["seconds"],
        )
        self.emit(
            {
                "id": fault.pk,
                "kind": fault.kind,
                "symbol": fault.symbol or None,
                "login": fault.login,
                "count": None if fault.until_msc else fault.remaining,
                "until_msc": fault.until_msc,
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
