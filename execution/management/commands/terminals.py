"""``terminals``: configure the MT5 terminals and which accounts each one serves.

    terminals add NAME (--path PATH | --host H --port P [--path REMOTE_PATH]) [--accounts LOGIN@SERVER,...]
                       [--password-env VAR] [--notes TEXT]
                       [--symbol-suffix S] [--symbol-prefix P] [--symbol-names CANONICAL=BROKER,...]
    terminals symbols NAME [--suffix S] [--prefix P] [--names CANONICAL=BROKER,...]
    terminals pin NAME --accounts LOGIN@SERVER[,...]
    terminals unpin NAME --accounts LOGIN@SERVER[,...]
    terminals list
    terminals remove NAME [--force]

An account is pinned to exactly one terminal. A password is never given here nor stored:
``--password-env`` names the environment variable that holds it (read by the processes that log
in), and without it the terminal's saved login is used. ``--symbol-suffix`` and friends say how its
trade servers name symbols (``EURUSD.m`` for the canonical ``EURUSD``: ``--symbol-suffix .m``);
nothing given, the adapter learns each server's names when unambiguous (``terminals symbols NAME``
with no option goes back to that). Errors are one line, exit code 1.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from execution.models import Terminal
from execution.terminals import (
    TerminalError,
    naming_of,
    parse_accounts,
    password_source,
    symbol_naming,
    terminal_add,
    terminal_pin,
    terminal_remove,
    terminal_set_symbols,
    terminal_unpin,
)

NO_SECRETS = "passwords are never given on the command line: name an environment variable with --password-env VAR"


class Command(BaseCommand):
    help = "Configure MT5 terminals: add, pin accounts, list, remove."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True, parser_class=CommandParser)

        add = sub.add_parser("add", help="configure a terminal and pin accounts to it")
        add.add_argument("name")
        add.add_argument("--path", default="", help="terminal64.exe (with --host: the terminal on that host)")
        add.add_argument("--host", default="", help="the mt5linux RPyC server")
        add.add_argument("--port", type=int, default=None, help="its port")
        add.add_argument("--accounts", action="append", default=[], help="LOGIN@SERVER[,LOGIN@SERVER...]")
        add.add_argument("--password-env", default="", help="the NAME of the environment variable holding the password")
        add.add_argument("--notes", default="")
        add.add_argument("--symbol-suffix", default="", help="what its servers add to symbol names (EURUSD.m: .m)")
        add.add_argument("--symbol-prefix", default="", help="what its servers put before symbol names (#US30: #)")
        add.add_argument("--symbol-names", default="", help="exceptions, CANONICAL=BROKER[,...] (US30=DJ30.cash)")
        symbols = sub.add_parser("symbols", help="how a terminal's servers name symbols (no option: learnt)")
        symbols.add_argument("name")
        symbols.add_argument("--suffix", default="")
        symbols.add_argument("--prefix", default="")
        symbols.add_argument("--names", default="", help="CANONICAL=BROKER[,...]")
        # Accepted only to be refused with a clear message, instead of argparse's "unrecognized".
        add.add_argument("--password", default=None, help="refused: " + NO_SECRETS)

        for verb, text in (("pin", "pin accounts to a terminal"), ("unpin", "unpin accounts from a terminal")):
            pin = sub.add_parser(verb, help=text)
            pin.add_argument("name")
            pin.add_argument("--accounts", action="append", required=True, help="LOGIN@SERVER[,LOGIN@SERVER...]")

        sub.add_parser("list", help="every terminal, its accounts and where their password comes from")

        remove = sub.add_parser("remove", help="remove a terminal (refused while accounts are pinned)")
        remove.add_argument("name")
        remove.add_argument("--force", action="store_true", help="unpin its accounts and remove it")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            getattr(self, f"do_{options['action']}")(options)
        except TerminalError as exc:
            raise CommandError(str(exc)) from exc

    def do_add(self, options: dict[str, Any]) -> None:
        if options["password"] is not None:
            raise CommandError(NO_SECRETS)
        terminal = terminal_add(
            options["name"],
            path=options["path"],
            host=options["host"],
            port=options["port"],
            accounts=parse_accounts(options["accounts"]) if options["accounts"] else (),
            password_env=options["password_env"],
            notes=options["notes"],
            symbols=symbol_naming(
                suffix=options["symbol_suffix"], prefix=options["symbol_prefix"], names=options["symbol_names"]
            ),
        )
        count = terminal.accounts.count()
        self.stdout.write(f"terminal {terminal.name} added ({terminal.kind}, {count} account(s) pinned)")

    def do_symbols(self, options: dict[str, Any]) -> None:
        naming = symbol_naming(suffix=options["suffix"], prefix=options["prefix"], names=options["names"])
        terminal = terminal_set_symbols(options["name"], naming)
        self.stdout.write(f"terminal {terminal.name}: symbols {naming.describe()}")

    def do_pin(self, options: dict[str, Any]) -> None:
        pinned = terminal_pin(options["name"], parse_accounts(options["accounts"]))
        self.stdout.write(f"{len(pinned)} account(s) pinned to {options['name']}")

    def do_unpin(self, options: dict[str, Any]) -> None:
        removed = terminal_unpin(options["name"], parse_accounts(options["accounts"]))
        self.stdout.write(f"{removed} account(s) unpinned from {options['name']}")

    def do_remove(self, options: dict[str, Any]) -> None:
        unpinned = terminal_remove(options["name"], force=options["force"])
        self.stdout.write(f"terminal {options['name']} removed ({unpinned} account(s) unpinned)")

    def do_list(self, options: dict[str, Any]) -> None:
        rows = [("NAME", "KIND", "WHERE", "ACCOUNTS", "SYMBOLS", "PASSWORD")]
        for t in Terminal.objects.prefetch_related("accounts").order_by("name"):
            where = (f"{t.host}:{t.port}" + (f" {t.path}" if t.path else "")) if t.kind == "mt5linux" else t.path
            accounts = ",".join(str(a) for a in t.accounts.all()) or "-"
            rows.append((t.name, t.kind, where, accounts, naming_of(t).describe(), password_source(t)))
        if len(rows) == 1:
            self.stdout.write("no terminal configured")
            return
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
        for row in rows:
            padded = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
            self.stdout.write("  ".join([*padded, row[-1]]))
