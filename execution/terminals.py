"""Which MT5 terminal serves an account (ARCHITECTURE.md, "Real MT5 topology").

Terminals are configured, not implied: a ``Terminal`` row says where one runs (a path, or an
mt5linux host and port) and which environment variable holds its accounts' password; a
``TerminalAccount`` pins an account to exactly one terminal. ``terminal_for`` answers for the
gateway layer:

- an account pinned to a terminal is served by it;
- with ``MT5_BACKEND=simulator``, an unpinned account is served by a private terminal of its own,
  ``private-<login>`` (an identity only, for now: the simulator works as before);
- with ``official`` or ``mt5linux``, an unpinned account is served by the single terminal of the
  legacy settings (``MT5_TERMINAL_PATH``, ``MT5LINUX_HOST``/``MT5LINUX_PORT``, and ``MT5_PASSWORD``
  for ``MT5_LOGIN``), so a deployment from before terminals keeps working unchanged.

A password is never stored in the database: it is read from the named environment variable each
time a ``TerminalConfig`` is made, and ``TerminalConfig`` never prints it.

The management command ``terminals`` and the panel go through the services below.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.db.models.functions import Lower, Trim

from execution.adapters.official.symbols import SymbolNaming, SymbolNamingError
from execution.models import Terminal, TerminalAccount, TerminalKind

PRIVATE_PREFIX = "private-"
LEGACY = "legacy"
SAVED_LOGIN = "the terminal's saved login"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_SERVER_MAX = TerminalAccount._meta.get_field("server").max_length or 64


class TerminalError(ValueError):
    """A terminal operation that cannot be done; the message is one line for an operator."""


@dataclass(frozen=True)
class TerminalConfig:
    """Where an account's terminal is and how its accounts log in. ``password`` is read from the
    environment when the config is made; it is never printed (``repr``) nor compared."""

    name: str
    kind: str  # "path" | "mt5linux"
    path: str = ""
    host: str = ""
    port: int | None = None
    password: str | None = field(default=None, repr=False, compare=False)
    # How its servers name symbols (canonical EURUSD, the server's EURUSD.m).
    symbols: SymbolNaming = field(default_factory=SymbolNaming)

    @property
    def address(self) -> tuple[str, str, str, str, int | None, SymbolNaming]:
        """Everything that identifies the terminal, the password excluded (a changed symbol
        naming makes a new adapter, as a changed address does)."""
        return (self.name, self.kind, self.path, self.host, self.port, self.symbols)


# --- parsing ------------------------------------------------------------------------------------
def normalise_server(server: str) -> str:
    """Server names compare trimmed and case-insensitively (as the unique pin does)."""
    return server.strip().lower()


def parse_account(text: str) -> tuple[int, str]:
    """``LOGIN@SERVER`` → (login, server)."""
    login_text, at, server = text.strip().partition("@")
    server = server.strip()
    if not at or not login_text.strip().isdigit() or not server or len(server) > _SERVER_MAX:
        raise TerminalError(f"malformed account {text.strip()!r}: expected LOGIN@SERVER, e.g. 50040367@Broker-Server")
    login = int(login_text.strip())
    if login <= 0:
        raise TerminalError(f"malformed account {text.strip()!r}: the login must be a positive number")
    return login, server


def parse_accounts(text: str | Iterable[str]) -> list[tuple[int, str]]:
    """``LOGIN@SERVER[,LOGIN@SERVER...]`` (or several such strings) → the accounts, each once."""
    parts = text.split(",") if isinstance(text, str) else [p for t in text for p in t.split(",")]
    accounts: dict[tuple[int, str], tuple[int, str]] = {}
    for part in parts:
        if not part.strip():
            raise TerminalError("malformed account list: an empty entry (expected LOGIN@SERVER[,LOGIN@SERVER...])")
        login, server = parse_account(part)
        accounts.setdefault((login, normalise_server(server)), (login, server))
    return list(accounts.values())


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise TerminalError(f"bad terminal name {name!r}: letters, digits, '-' and '_', at most 64")
    if name.lower().startswith(PRIVATE_PREFIX) or name.lower() == LEGACY:
        raise TerminalError(f"the terminal name {name!r} is reserved ({PRIVATE_PREFIX}<login>, {LEGACY})")
    return name


def check_password_env(value: str) -> str:
    """The name of an environment variable, never a secret. The value is not repeated in the error:
    whoever typed a password here should not find it in a log."""
    if value and not _ENV_NAME.match(value):
        raise TerminalError(
            "--password-env takes the NAME of an environment variable (letters, digits, '_'), never a password"
        )
    return value


def symbol_naming(*, suffix: str = "", prefix: str = "", names: str = "") -> SymbolNaming:
    """A terminal's symbol naming, checked (``TerminalError`` in one line when it cannot be)."""
    try:
        return SymbolNaming.parse(suffix=suffix, prefix=prefix, names=names)
    except SymbolNamingError as exc:
        raise TerminalError(str(exc)) from exc


def naming_of(terminal: Terminal) -> SymbolNaming:
    return symbol_naming(suffix=terminal.symbol_suffix, prefix=terminal.symbol_prefix, names=terminal.symbol_names)


def password_source(terminal: Terminal) -> str:
    return f"env {terminal.password_env}" if terminal.password_env else SAVED_LOGIN


# --- the resolver ------------------------------------------------------------------------------
def config_of(terminal: Terminal) -> TerminalConfig:
    """The terminal's configuration, its password read from the environment now."""
    password = (os.environ.get(terminal.password_env) or None) if terminal.password_env else None
    return TerminalConfig(
        name=terminal.name,
        kind=terminal.kind,
        path=terminal.path,
        host=terminal.host,
        port=terminal.port,
        password=password,
        symbols=naming_of(terminal),
    )


def _backend() -> str:
    return (getattr(settings, "MT5_BACKEND", "simulator") or "simulator").lower()


def private_terminal(login: int) -> TerminalConfig:
    return TerminalConfig(name=f"{PRIVATE_PREFIX}{login}", kind=TerminalKind.PATH)


def legacy_terminal(login: int, server: str) -> TerminalConfig:
    """The single terminal of the settings from before terminals were configured."""
    path = getattr(settings, "MT5_TERMINAL_PATH", "") or ""
    configured_login = getattr(settings, "MT5_LOGIN", 0)
    configured_server = getattr(settings, "MT5_SERVER", "")
    password = None
    if login == configured_login and (
        not configured_server or normalise_server(server) == normalise_server(configured_server)
    ):
        password = getattr(settings, "MT5_PASSWORD", "") or None
    if _backend() == "mt5linux":
        return TerminalConfig(
            name=LEGACY,
            kind=TerminalKind.MT5LINUX,
            path=path,
            host=getattr(settings, "MT5LINUX_HOST", "127.0.0.1"),
            port=int(getattr(settings, "MT5LINUX_PORT", 18812)),
            password=password,
        )
    return TerminalConfig(name=LEGACY, kind=TerminalKind.PATH, path=path, password=password)


def _unpinned(login: int, server: str) -> TerminalConfig:
    return private_terminal(login) if _backend() == "simulator" else legacy_terminal(login, server)


def _pins(logins: Iterable[int]) -> QuerySet[TerminalAccount]:
    return TerminalAccount.objects.select_related("terminal").filter(login__in=set(logins))


def terminal_for(login: int, server: str) -> TerminalConfig:
    """The terminal that serves ``login@server`` (see the module's docstring)."""
    terminal = pinned_terminal(login, server)
    return config_of(terminal) if terminal is not None else _unpinned(login, server)


def terminals_for(accounts: Iterable[tuple[int, str]]) -> dict[tuple[int, str], TerminalConfig]:
    """``terminal_for`` of many accounts in one query (the risk monitor's cycle)."""
    keys = list(accounts)
    pinned = {(p.login, normalise_server(p.server)): p.terminal for p in _pins(login for login, _ in keys)}
    configs: dict[str, TerminalConfig] = {}
    out: dict[tuple[int, str], TerminalConfig] = {}
    for login, server in keys:
        terminal = pinned.get((login, normalise_server(server)))
        if terminal is None:
            out[(login, server)] = _unpinned(login, server)
        else:
            out[(login, server)] = configs.setdefault(terminal.name, config_of(terminal))
    return out


def terminal_named(name: str) -> TerminalConfig | None:
    """The terminal called ``name`` (configured, private or legacy), or None: how the owner of a
    terminal finds it from a call another process sent."""
    if name.startswith(PRIVATE_PREFIX) and name[len(PRIVATE_PREFIX) :].isdigit():
        return private_terminal(int(name[len(PRIVATE_PREFIX) :]))
    terminal = Terminal.objects.filter(name=name).first()
    if terminal is not None:
        return config_of(terminal)
    if name == LEGACY and _backend() != "simulator":
        return legacy_terminal(getattr(settings, "MT5_LOGIN", 0), getattr(settings, "MT5_SERVER", ""))
    return None


def terminal_names() -> list[str]:
    """Every terminal the bridge drives: the configured ones, and the private terminal of each
    unpinned account the bridge serves (simulator) or the legacy one (official, mt5linux)."""
    from policies.models import TradingAccount

    names = list(Terminal.objects.order_by("name").values_list("name", flat=True))
    pinned = {
        (login, normalise_server(server)) for login, server in TerminalAccount.objects.values_list("login", "server")
    }
    unpinned = [
        (login, server)
        for login, server in TradingAccount.objects.order_by("login").values_list("login", "server")
        if (login, normalise_server(server)) not in pinned
    ]
    if _backend() == "simulator":
        names += sorted({private_terminal(login).name for login, _ in unpinned})
    elif unpinned or not names:
        names.append(LEGACY)
    return names


def configured_terminals() -> list[TerminalConfig]:
    """Every configured terminal; none configured, the legacy one (official and mt5linux)."""
    configs = [config_of(t) for t in Terminal.objects.order_by("name")]
    if configs or _backend() == "simulator":
        return configs
    return [legacy_terminal(getattr(settings, "MT5_LOGIN", 0), getattr(settings, "MT5_SERVER", ""))]


# --- services (the ``terminals`` command and the panel) ---------------------------------------------
def get_terminal(name: str) -> Terminal:
    terminal = Terminal.objects.filter(name=name).first()
    if terminal is None:
        raise TerminalError(f"unknown terminal {name!r} (see: manage.py terminals list)")
    return terminal


@transaction.atomic
def terminal_add(
    name: str,
    *,
    path: str = "",
    host: str = "",
    port: int | None = None,
    accounts: Iterable[tuple[int, str]] = (),
    password_env: str = "",
    notes: str = "",
    symbols: SymbolNaming | None = None,
) -> Terminal:
    """A new terminal (``host`` and ``port``: mt5linux, its ``path`` optional; else ``path``), its accounts pinned.
    ``symbols``: how its servers name symbols (default: learnt)."""
    check_name(name)
    check_password_env(password_env)
    symbols = symbols or SymbolNaming()
    path, host = path.strip(), host.strip()
    if host or port is not None:
        if not host or port is None:
            raise TerminalError("an mt5linux terminal needs both --host and --port")
        if not 0 < port < 65536:
            raise TerminalError(f"bad port {port}: expected 1-65535")
        kind = TerminalKind.MT5LINUX
    elif path:
        kind = TerminalKind.PATH
    else:
        raise TerminalError("a terminal needs --path PATH (or --host H --port P for mt5linux)")
    if Terminal.objects.filter(name=name).exists():
        raise TerminalError(f"a terminal named {name!r} already exists")
    try:
        with transaction.atomic():
            terminal = Terminal.objects.create(
                name=name,
                kind=kind,
                path=path,
                host=host,
                port=port,
                password_env=password_env,
                notes=notes,
                symbol_suffix=symbols.suffix,
                symbol_prefix=symbols.prefix,
                symbol_names=symbols.names_text(),
            )
    except IntegrityError as exc:  # added meanwhile by someone else
        raise TerminalError(f"a terminal named {name!r} already exists") from exc
    terminal_pin(terminal, accounts)
    return terminal


@transaction.atomic
def terminal_pin(terminal: Terminal | str, accounts: Iterable[tuple[int, str]]) -> list[TerminalAccount]:
    """Pin accounts to the terminal; one already pinned to it is left as it is, one pinned
    elsewhere is refused (an account is served by exactly one terminal)."""
    terminal = get_terminal(terminal) if isinstance(terminal, str) else terminal
    wanted = list(accounts)
    existing = {(p.login, normalise_server(p.server)): p for p in _pins(login for login, _ in wanted)}
    pinned = []
    for login, server in wanted:
        server = server.strip()
        found = existing.get((login, normalise_server(server)))
        if found is not None:
            if found.terminal_id != terminal.pk:
                raise TerminalError(f"account {login}@{server} is already pinned to terminal {found.terminal.name!r}")
            continue
        try:
            with transaction.atomic():
                pin = TerminalAccount.objects.create(terminal=terminal, login=login, server=server)
        except IntegrityError as exc:  # pinned meanwhile by someone else
            raise TerminalError(f"account {login}@{server} is already pinned to a terminal") from exc
        existing[(login, normalise_server(server))] = pin
        pinned.append(pin)
    return pinned


@transaction.atomic
def terminal_set_symbols(terminal: Terminal | str, symbols: SymbolNaming) -> Terminal:
    """How the terminal's servers name symbols, from now on (an empty naming: learnt)."""
    terminal = get_terminal(terminal) if isinstance(terminal, str) else terminal
    terminal.symbol_suffix, terminal.symbol_prefix = symbols.suffix, symbols.prefix
    terminal.symbol_names = symbols.names_text()
    terminal.save(update_fields=["symbol_suffix", "symbol_prefix", "symbol_names"])
    return terminal


@transaction.atomic
def terminal_unpin(terminal: Terminal | str, accounts: Iterable[tuple[int, str]]) -> int:
    terminal = get_terminal(terminal) if isinstance(terminal, str) else terminal
    removed = 0
    for login, server in accounts:
        pins = terminal.accounts.annotate(server_key=Lower(Trim("server")))
        removed += pins.filter(login=login, server_key=normalise_server(server)).delete()[0]
    return removed


@transaction.atomic
def terminal_remove(name: str, *, force: bool = False) -> int:
    """Delete the terminal; refused while accounts are pinned to it, unless ``force`` (which unpins
    them). Returns how many accounts were unpinned."""
    terminal = get_terminal(name)
    pins = list(terminal.accounts.all())
    if pins and not force:
        shown = ", ".join(str(p) for p in pins[:3]) + (", ..." if len(pins) > 3 else "")
        raise TerminalError(
            f"terminal {name!r} still serves {len(pins)} account(s) ({shown}): unpin them, or use --force"
        )
    terminal.delete()
    return len(pins)


@transaction.atomic
def terminal_ensure(name: str, *, path: str = "", host: str = "", port: int | None = None) -> tuple[Terminal, bool]:
    """The terminal named so, created with this address when missing (seed_demo); an existing one is left as it is."""
    terminal = Terminal.objects.filter(name=name).first()
    if terminal is not None:
        return terminal, False
    return terminal_add(name, path=path, host=host, port=port), True


def pinned_terminal(login: int, server: str) -> Terminal | None:
    pin = (
        TerminalAccount.objects.select_related("terminal")
        .annotate(server_key=Lower(Trim("server")))
        .filter(login=login, server_key=normalise_server(server))
        .first()
    )
    return pin.terminal if pin is not None else None
