"""Durable state of the execution layer: the configured MT5 terminals, and the MT5 simulator.

``Terminal`` and ``TerminalAccount`` say which terminal serves which account
(``execution.terminals`` reads them). The simulator is a trade server shared by every process
(web, both lanes, the risk monitor, the price feed), so its state lives in the database rather
than in memory; its tables are prefixed ``Sim`` so nobody mistakes them for the bridge's own
records. Times are stored as epoch milliseconds, as MT5 reports them.
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any, TypedDict

from django.db import models
from django.db.models.functions import Lower, Trim

from execution.simulator import constants as c


class _Digits(TypedDict):
    """The precision arguments of a ``DecimalField``, typed so ``**MONEY`` type-checks."""

    max_digits: int
    decimal_places: int


MONEY: _Digits = {"max_digits": 20, "decimal_places": 2}
PRICE: _Digits = {"max_digits": 20, "decimal_places": 6}
VOLUME: _Digits = {"max_digits": 14, "decimal_places": 4}
ZERO = Decimal("0")


class SimAccount(models.Model):
    """A trading account on the simulated trade server (one login per server)."""

    login = models.BigIntegerField()
    server = models.CharField(max_length=64, default="Broker-Server")
    password = models.CharField(max_length=128, blank=True, help_text="Empty: any password (or none) is accepted.")
    name = models.CharField(max_length=128, blank=True)
    company = models.CharField(max_length=128, default="MT5 Bridge Simulator")
    currency = models.CharField(max_length=8, default="USD")
    currency_digits = models.PositiveSmallIntegerField(default=2)
    leverage = models.PositiveIntegerField(default=100)
    balance = models.DecimalField(**MONEY, default=ZERO)
    credit = models.DecimalField(**MONEY, default=ZERO)
    trade_mode = models.SmallIntegerField(default=c.ACCOUNT_TRADE_MODE_DEMO)
    # The user's trade right (ACCOUNT_TRADE_ALLOWED in the terminal; the Manager API's
    # USER_RIGHT_TRADE_DISABLED is its inverse): off, every request from the user's own terminal,
    # closes included, gets 10017; a dealer can still close (service.sim_dealer_close).
    trade_allowed = models.BooleanField(
        default=True, help_text="False: trading disabled: every request from the user's terminal gets 10017."
    )
    trade_expert = models.BooleanField(default=True, help_text="False: the server refuses Expert trading (10026).")
    limit_orders = models.PositiveIntegerField(default=200)
    # ACCOUNT_MARGIN_MODE_RETAIL_NETTING (one position per symbol: deals add, reduce, close or
    # reverse it) or ACCOUNT_MARGIN_MODE_RETAIL_HEDGING (every deal in opens a position of its own).
    margin_mode = models.SmallIntegerField(
        choices=[(c.ACCOUNT_MARGIN_MODE_RETAIL_NETTING, "netting"), (c.ACCOUNT_MARGIN_MODE_RETAIL_HEDGING, "hedging")],
        default=c.ACCOUNT_MARGIN_MODE_RETAIL_HEDGING,
    )
    # Margin call and stop-out levels, in percent of the margin level (equity / margin x 100):
    # below ``margin_so_so`` the server closes the most losing position, again and again, until
    # the level is back at or above it (``TradeServer.fire_triggers``).
    margin_so_call = models.DecimalField(max_digits=8, decimal_places=2, default=Decimal("100"))
    margin_so_so = models.DecimalField(max_digits=8, decimal_places=2, default=Decimal("50"))
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["login", "server"], name="simaccount_login_server_unique")]
        verbose_name = "simulated account"

    def __str__(self) -> str:
        return f"{self.login}@{self.server}"


class SimTerminal(models.Model):
    """A simulated terminal, known by its path: what every process attached to it shares.

    Like a real terminal it holds one logged-in account at a time, for every process that
    ``initialize(path)``-ed it: a ``login()`` from any of them switches it for all, and
    ``order_send`` trades on whatever account it holds at that instant. Its "Algo Trading" button
    and its "disable Python API trading" option are the terminal's too.
    """

    path = models.CharField(max_length=500, unique=True)
    account = models.ForeignKey(SimAccount, null=True, blank=True, on_delete=models.SET_NULL, related_name="terminals")
    trade_allowed = models.BooleanField(default=True, help_text="The terminal's Algo Trading button.")
    tradeapi_disabled = models.BooleanField(default=False, help_text="Its 'disable Python API trading' option.")
    logins = models.PositiveIntegerField(default=0, help_text="How many times an account logged in here.")
    logged_in_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "simulated terminal"

    def __str__(self) -> str:
        return self.path


class SimSymbol(models.Model):
    """A tradable instrument and its current quote (one quote stream for every account)."""

    name = models.CharField(max_length=32, unique=True)
    description = models.CharField(max_length=128, blank=True)
    currency_base = models.CharField(max_length=8)
    currency_profit = models.CharField(max_length=8)
    currency_margin = models.CharField(max_length=8)
    digits = models.PositiveSmallIntegerField()
    point = models.DecimalField(max_digits=20, decimal_places=10)
    trade_contract_size = models.DecimalField(max_digits=20, decimal_places=4)
    trade_calc_mode = models.SmallIntegerField(default=c.SYMBOL_CALC_MODE_FOREX)
    trade_exemode = models.SmallIntegerField(default=c.SYMBOL_TRADE_EXECUTION_MARKET)
    trade_mode = models.SmallIntegerField(default=c.SYMBOL_TRADE_MODE_FULL)
    filling_mode = models.PositiveSmallIntegerField(
        default=c.SYMBOL_FILLING_FOK | c.SYMBOL_FILLING_IOC, help_text="SYMBOL_FILLING_* bitmask: FOK=1, IOC=2."
    )
    sessions_open = models.BooleanField(default=True, help_text="False: every trade request gets 10018.")
    volume_min = models.DecimalField(**VOLUME, default=Decimal("0.01"))
    volume_max = models.DecimalField(**VOLUME, default=Decimal("100"))
    volume_step = models.DecimalField(**VOLUME, default=Decimal("0.01"))
    typical_spread = models.PositiveIntegerField(help_text="In points; `mt5sim price` adds it when no ask is given.")
    trade_stops_level = models.PositiveIntegerField(default=0, help_text="Minimum SL/TP distance, in points.")
    swap_long = models.DecimalField(**MONEY, default=ZERO, help_text="Per lot per rollover, account currency.")
    swap_short = models.DecimalField(**MONEY, default=ZERO, help_text="Per lot per rollover, account currency.")
    commission_per_lot = models.DecimalField(**MONEY, default=ZERO, help_text="Per lot per deal (in and out).")
    anchor = models.DecimalField(**PRICE, help_text="The price the random-walk feed reverts to.")
    bid = models.DecimalField(**PRICE)
    ask = models.DecimalField(**PRICE)
    price_time_msc = models.BigIntegerField(default=0)

    class Meta:
        verbose_name = "simulated symbol"

    def __str__(self) -> str:
        return self.name


class SimPosition(models.Model):
    """An open position. Its ticket is the ticket of the order that opened it, and so is its
    identifier (``position_id`` of its orders and deals); on a netting account a reversal gives
    the position the reversing order's ticket and keeps its identifier, as MT5 does."""

    ticket = models.BigIntegerField(unique=True)
    identifier = models.BigIntegerField(default=0, help_text="POSITION_IDENTIFIER: the opening order's ticket.")
    account = models.ForeignKey(SimAccount, on_delete=models.CASCADE, related_name="positions")
    symbol = models.ForeignKey(SimSymbol, on_delete=models.PROTECT, related_name="+")
    type = models.SmallIntegerField()
    volume = models.DecimalField(**VOLUME)
    price_open = models.DecimalField(**PRICE)
    sl = models.DecimalField(**PRICE, default=ZERO)
    tp = models.DecimalField(**PRICE, default=ZERO)
    magic = models.BigIntegerField(default=0)
    comment = models.CharField(max_length=31, blank=True)
    reason = models.SmallIntegerField(default=c.POSITION_REASON_EXPERT)
    swap = models.DecimalField(**MONEY, default=ZERO)
    commission = models.DecimalField(**MONEY, default=ZERO, help_text="Entry commission (already in the balance).")
    time_msc = models.BigIntegerField()
    time_update_msc = models.BigIntegerField()
    external_id = models.CharField(max_length=64, blank=True)

    class Meta:
        verbose_name = "simulated position"
        # The simulated Manager API's pump finds what changed since its last cycle by this stamp.
        indexes = [models.Index(fields=["time_update_msc"], name="simposition_updated")]

    def __str__(self) -> str:
        return f"#{self.ticket} {self.symbol_id} {self.volume}"


class SimOrder(models.Model):
    """An order: a pending order while ``is_open``; afterwards part of the account's order history."""

    ticket = models.BigIntegerField(unique=True)
    account = models.ForeignKey(SimAccount, on_delete=models.CASCADE, related_name="orders")
    symbol = models.ForeignKey(SimSymbol, on_delete=models.PROTECT, related_name="+")
    is_open = models.BooleanField(default=False)
    type = models.SmallIntegerField()
    type_time = models.SmallIntegerField(default=c.ORDER_TIME_GTC)
    type_filling = models.SmallIntegerField(default=c.ORDER_FILLING_RETURN)
    state = models.SmallIntegerField()
    volume_initial = models.DecimalField(**VOLUME)
    volume_current = models.DecimalField(**VOLUME)
    price_open = models.DecimalField(**PRICE, default=ZERO)
    price_stoplimit = models.DecimalField(**PRICE, default=ZERO)
    sl = models.DecimalField(**PRICE, default=ZERO)
    tp = models.DecimalField(**PRICE, default=ZERO)
    magic = models.BigIntegerField(default=0)
    comment = models.CharField(max_length=31, blank=True)
    position_id = models.BigIntegerField(default=0)
    position_by_id = models.BigIntegerField(default=0)
    reason = models.SmallIntegerField(default=c.ORDER_REASON_EXPERT)
    time_setup_msc = models.BigIntegerField()
    time_done_msc = models.BigIntegerField(default=0)
    time_expiration = models.BigIntegerField(default=0)
    external_id = models.CharField(max_length=64, blank=True)

    class Meta:
        indexes = [models.Index(fields=["account", "is_open", "time_setup_msc"], name="simorder_account_open_time")]
        verbose_name = "simulated order"

    def __str__(self) -> str:
        return f"#{self.ticket} {self.symbol_id}"


class SimDeal(models.Model):
    """A deal in the account's history: fills (entry in/out) and balance operations."""

    ticket = models.BigIntegerField(unique=True)
    account = models.ForeignKey(SimAccount, on_delete=models.CASCADE, related_name="deals")
    order = models.BigIntegerField(default=0)
    symbol = models.CharField(max_length=32, blank=True, help_text="Empty for balance operations.")
    type = models.SmallIntegerField()
    entry = models.SmallIntegerField(default=c.DEAL_ENTRY_IN)
    magic = models.BigIntegerField(default=0)
    position_id = models.BigIntegerField(default=0)
    reason = models.SmallIntegerField(default=c.DEAL_REASON_EXPERT)
    volume = models.DecimalField(**VOLUME, default=ZERO)
    price = models.DecimalField(**PRICE, default=ZERO)
    commission = models.DecimalField(**MONEY, default=ZERO)
    swap = models.DecimalField(**MONEY, default=ZERO)
    profit = models.DecimalField(**MONEY, default=ZERO)
    fee = models.DecimalField(**MONEY, default=ZERO)
    comment = models.CharField(max_length=31, blank=True)
    external_id = models.CharField(max_length=64, blank=True)
    time_msc = models.BigIntegerField()

    class Meta:
        indexes = [
            models.Index(fields=["account", "time_msc"], name="simdeal_account_time"),
            models.Index(fields=["account", "position_id"], name="simdeal_account_position"),
        ]
        verbose_name = "simulated deal"

    def __str__(self) -> str:
        return f"#{self.ticket} {self.symbol or 'balance'}"


class SimFaultKind(models.TextChoices):
    REQUOTE = "requote"
    NO_CONNECTION = "no_connection"
    MARKET_CLOSED = "market_closed"
    TIMEOUT_AFTER_FILL = "timeout_after_fill"
    PARTIAL_FILL = "partial_fill"


class SimFault(models.Model):
    """An injected fault: the next ``remaining`` matching order_send calls misbehave, or, with
    ``until_msc``, every matching call until then (an outage)."""

    kind = models.CharField(max_length=32, choices=SimFaultKind.choices)
    symbol = models.CharField(max_length=32, blank=True, help_text="Empty: any symbol.")
    login = models.BigIntegerField(null=True, blank=True, help_text="Empty: any account.")
    remaining = models.PositiveIntegerField(default=1)
    until_msc = models.BigIntegerField(
        null=True, blank=True, help_text="An outage: every matching call fails until this time (epoch ms)."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["remaining"], name="simfault_remaining")]
        verbose_name = "simulated fault"

    def __str__(self) -> str:
        return f"{self.kind} until {self.until_msc}" if self.until_msc else f"{self.kind} x{self.remaining}"


class SimTicketSequence(models.Model):
    """The trade server's ticket counter (orders, deals and positions draw from it)."""

    value = models.BigIntegerField(default=0)

    class Meta:
        verbose_name = "simulated ticket sequence"

    def __str__(self) -> str:
        return str(self.value)


class TerminalKind(models.TextChoices):
    PATH = "path", "path (a terminal64.exe this host starts)"
    MT5LINUX = "mt5linux", "mt5linux (an RPyC server at host:port)"


class Terminal(models.Model):
    """A configured MT5 terminal: where it runs and where the password of its accounts comes from.

    It never holds a password: ``password_env`` names the environment variable that does, read
    when an account logs in; empty means the terminal's saved login.
    """

    name = models.SlugField(max_length=64, unique=True)
    kind = models.CharField(max_length=16, choices=TerminalKind.choices, default=TerminalKind.PATH)
    path = models.CharField(
        max_length=500, blank=True, help_text="terminal64.exe (kind path; optional for mt5linux: the remote terminal)."
    )
    host = models.CharField(max_length=255, blank=True, help_text="The mt5linux RPyC server (kind mt5linux).")
    port = models.PositiveIntegerField(null=True, blank=True, help_text="Its port (kind mt5linux).")
    password_env = models.CharField(
        max_length=128,
        blank=True,
        help_text="The NAME of an environment variable holding its accounts' password (never the password); "
        "empty: the terminal's saved login.",
    )
    # How its trade servers name symbols (execution.adapters.official.symbols): Laravel speaks the
    # canonical name; nothing configured, the adapter learns each server's names.
    symbol_suffix = models.CharField(
        max_length=16, blank=True, help_text="Added to every canonical symbol name on its servers (EURUSD.m: .m)."
    )
    symbol_prefix = models.CharField(
        max_length=16, blank=True, help_text="Put before every canonical symbol name on its servers (#US30: #)."
    )
    symbol_names = models.CharField(
        max_length=1000,
        blank=True,
        help_text="Exceptions to the suffix and prefix, CANONICAL=BROKER[,...] (US30=DJ30.cash). "
        "Nothing configured: each server's names are learnt from its symbol list when unambiguous.",
    )
    notes = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("name",)
        verbose_name = "MT5 terminal"

    def __str__(self) -> str:
        return self.name


class TerminalAccount(models.Model):
    """An account pinned to a terminal: every call for it goes to that terminal, and only that one."""

    terminal = models.ForeignKey(Terminal, on_delete=models.CASCADE, related_name="accounts")
    login = models.BigIntegerField()
    server = models.CharField(max_length=64)

    class Meta:
        ordering = ("login", "server")
        verbose_name = "pinned account"
        constraints = [
            # An account is pinned to exactly one terminal; server names compare trimmed and case-insensitively.
            models.UniqueConstraint(
                "login",
                Lower(Trim("server")),
                name="terminalaccount_one_terminal",
                violation_error_message="This account is already pinned to a terminal.",
            )
        ]

    def __str__(self) -> str:
        return f"{self.login}@{self.server}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        self.server = self.server.strip()
        super().save(*args, **kwargs)


def _now_msc() -> int:
    return time.time_ns() // 1_000_000


class TerminalLease(models.Model):
    """Who drives a terminal now (``execution.owners``): held while its holder renews it.

    Times are epoch milliseconds, compared the same way on every database."""

    name = models.CharField(max_length=100, primary_key=True)
    holder = models.CharField(max_length=100)
    host = models.CharField(max_length=255, blank=True)
    pid = models.IntegerField(default=0)
    expires_msc = models.BigIntegerField()
    taken_msc = models.BigIntegerField(default=_now_msc)

    class Meta:
        verbose_name = "terminal lease"

    def __str__(self) -> str:
        return f"{self.name}: {self.holder}"


class TerminalCall(models.Model):
    """An MT5 call for a terminal this process does not own, waiting for its owner: the durable
    row of the durable-row + doorbell rule (``execution.owners``)."""

    PENDING, RUNNING, DONE, FAILED = "pending", "running", "done", "failed"

    terminal = models.CharField(max_length=100)
    priority = models.SmallIntegerField()
    method = models.CharField(max_length=64)
    payload = models.BinaryField()
    state = models.CharField(max_length=8, default=PENDING)
    result = models.BinaryField(null=True)
    caller = models.CharField(max_length=100)
    owner = models.CharField(max_length=100, blank=True)
    deadline_msc = models.BigIntegerField()
    created_msc = models.BigIntegerField(default=_now_msc)

    class Meta:
        indexes = [models.Index(fields=["terminal", "state", "priority", "id"], name="terminalcall_claim")]
