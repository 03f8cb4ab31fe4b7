"""Every hand-written SQL statement of the simulator, the rows they read, and the machinery
that builds them once per database vendor.

A terminal call costs more CPU in building and compiling its querysets (``get_select``,
``as_sql``, ``select_related``) than PostgreSQL spends answering them, and the lanes make
several per command. These statements are written once from the models' own table and column
names, every value a bound parameter, and rows come back through the converters the ORM
would have applied to the same columns (none on PostgreSQL; decimals and booleans on SQLite),
so callers see the values a queryset would have given them. Where PostgreSQL gets a statement
of its own (row locks, one array parameter), the path SQLite takes is beside it.

Rows are read as plain NamedTuples: the read paths value hundreds of positions per snapshot,
and model instances would cost more than the arithmetic.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, NamedTuple, TypeAlias

from django.db import connection, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import BooleanField, Field, Model, Value
from django.db.models.expressions import RawSQL

from bridgeproject.dbutil import prepared_cursor
from execution.models import (
    SimAccount,
    SimDeal,
    SimFault,
    SimFaultKind,
    SimOrder,
    SimPosition,
    SimSymbol,
    SimTerminal,
    SimTicketSequence,
)
from execution.simulator.types import TradeDeal

# (column index, Django converter, the expression it was made for)
_Converter = tuple[int, Callable[[Any, Any, Any], Any], Any]


def qn(name: str) -> str:
    return connection.ops.quote_name(name)


def table(model: type[Model]) -> str:
    return qn(model._meta.db_table)


def field(model: type[Model], name: str) -> Field[Any, Any]:
    """The concrete field ``name`` (or attname) of ``model``; a reverse relation is a caller's mistake."""
    found = model._meta.get_field(name)
    if not isinstance(found, Field):
        raise LookupError(f"{model._meta.label}.{name} is a reverse relation, not a column")
    return found


def column_name(model: type[Model], name: str) -> str:
    """The database column of a concrete field; only fields without a column (many-to-many) have none."""
    col = field(model, name).column
    if col is None:
        raise LookupError(f"{model._meta.label}.{name} has no column")
    return col


def column(model: type[Model], name: str, alias: str = "") -> str:
    """``alias.column`` for a model field (``name`` may be an attname such as ``symbol_id``)."""
    col = qn(column_name(model, name))
    return f"{qn(alias)}.{col}" if alias else col


@dataclass(frozen=True)
class Select:
    """A SELECT and the converters of its result columns."""

    sql: str
    converters: tuple[_Converter, ...]

    def rows(self, params: Sequence[Any] | Mapping[str, Any]) -> list[tuple[Any, ...]]:
        with prepared_cursor() as cursor:
            cursor.execute(self.sql, params)
            rows = cursor.fetchall()
        if not self.converters or not rows:
            return rows
        converted = []
        for row in rows:
            values = list(row)
            for index, convert, expression in self.converters:
                values[index] = convert(values[index], expression, connection)
            converted.append(tuple(values))
        return converted


class Columns:
    """The select list of a statement being built, with each column's converters."""

    def __init__(self, db: BaseDatabaseWrapper) -> None:
        self.db = db
        self.sql: list[str] = []
        self.converters: list[_Converter] = []

    def _converters_for(self, expression: Any) -> None:
        index = len(self.sql) - 1
        for convert in self.db.ops.get_db_converters(expression) + expression.get_db_converters(self.db):
            self.converters.append((index, convert, expression))

    def add(self, model: type[Model], names: Iterable[str], alias: str) -> Columns:
        for name in names:
            f = field(model, name)
            self.sql.append(column(model, name, alias))
            self._converters_for(f.get_col(alias))
        return self

    def add_expression(self, sql: str, output_field: Field) -> Columns:
        """A computed column (an aggregate, EXISTS): converted like a non-column expression."""
        self.sql.append(sql)
        self._converters_for(Value(None, output_field=output_field))
        return self

    def select(self, rest: str, *, prefix: str = "") -> Select:
        return Select(f"{prefix}SELECT {', '.join(self.sql)} {rest}", tuple(self.converters))


_cache: dict[tuple[str, str], Any] = {}


def cached(key: str, build: Callable[[BaseDatabaseWrapper], Any]) -> Any:
    """``build(connection)`` once per vendor: the SQL differs between PostgreSQL and SQLite."""
    slot = (connection.vendor, key)
    found = _cache.get(slot)
    if found is None:
        found = _cache[slot] = build(connection)
    return found


def execute(sql: str, params: Sequence[Any] | Mapping[str, Any]) -> int:
    """Run a write; returns the row count."""
    with prepared_cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount


def prep(model: type[Model], values: Mapping[str, Any]) -> dict[str, Any]:
    """Each value as the ORM would send it for its field (decimals rounded to the column on SQLite)."""
    return {name: field(model, name).get_db_prep_save(value, connection) for name, value in values.items()}


def update_sql(model: type[Model], names: Sequence[str]) -> str:
    """``UPDATE table SET name = %(name)s, ... WHERE id = %(pk)s``."""
    sets = ", ".join(f"{column(model, n)} = %({n})s" for n in names)
    return f"UPDATE {table(model)} SET {sets} WHERE {column(model, 'id')} = %(pk)s"  # noqa: S608 - model names


def insert_sql(model: type[Model]) -> tuple[str, tuple[str, ...]]:
    """An INSERT of every concrete field but the primary key, and those fields' names."""
    names = tuple(f.attname for f in model._meta.concrete_fields if not f.primary_key)
    cols = ", ".join(qn(column_name(model, n)) for n in names)
    values = ", ".join(f"%({n})s" for n in names)
    return f"INSERT INTO {table(model)} ({cols}) VALUES ({values})", names  # noqa: S608 - model names


def insert(model: type[Model], values: Mapping[str, Any]) -> None:
    """``Model.objects.create(**values)`` without building a model instance or compiling an
    INSERT (no signal receivers listen to the simulator's models; the primary key is not read).
    Missing fields take their model defaults."""
    sql, names = cached(f"insert:{model._meta.label}", lambda db: insert_sql(model))
    row = {}
    for name in names:
        f = field(model, name)
        value = values[name] if name in values else f.get_default()
        row[name] = f.get_db_prep_save(value, connection)
    execute(sql, row)


# --- the rows the statements read ---------------------------------------------------------------
class SymbolRow(NamedTuple):
    """The symbol columns position valuation needs (duck-types SimSymbol for pricing)."""

    pk: int
    name: str
    bid: Decimal
    ask: Decimal
    currency_profit: str
    currency_margin: str
    trade_contract_size: Decimal
    trade_calc_mode: int


class PositionRow(NamedTuple):
    """An open position read as plain values: the read paths value hundreds of positions per
    snapshot, and model instances would cost more than the arithmetic."""

    ticket: int
    identifier: int
    type: int
    volume: Decimal
    price_open: Decimal
    sl: Decimal
    tp: Decimal
    magic: int
    comment: str
    reason: int
    swap: Decimal
    time_msc: int
    time_update_msc: int
    external_id: str
    symbol: SymbolRow


class AccountRow(NamedTuple):
    """The account columns ``account_info`` reads (duck-types SimAccount for the terminal's AccountInfo)."""

    id: int
    login: int
    server: str
    name: str
    company: str
    currency: str
    currency_digits: int
    leverage: int
    balance: Decimal
    credit: Decimal
    trade_mode: int
    trade_allowed: bool
    trade_expert: bool
    limit_orders: int
    margin_mode: int
    margin_so_call: Decimal
    margin_so_so: Decimal


class Symbol(NamedTuple):
    """A whole SimSymbol row as plain values (duck-types SimSymbol for the trade checks and the
    terminal's SymbolInfo); tests change its columns in the table and read them back through
    the terminal."""

    id: int
    name: str
    description: str
    currency_base: str
    currency_profit: str
    currency_margin: str
    digits: int
    point: Decimal
    trade_contract_size: Decimal
    trade_calc_mode: int
    trade_exemode: int
    trade_mode: int
    filling_mode: int
    sessions_open: bool
    volume_min: Decimal
    volume_max: Decimal
    volume_step: Decimal
    typical_spread: int
    trade_stops_level: int
    swap_long: Decimal
    swap_short: Decimal
    commission_per_lot: Decimal
    anchor: Decimal
    bid: Decimal
    ask: Decimal
    price_time_msc: int

    @property
    def pk(self) -> int:
        return self.id


# A symbol the trade checks work with: a whole row from ``symbol_rows``, or the model instance
# a pending order carries (read with ``select_related``). Both have every column.
TradedSymbol: TypeAlias = Symbol | SimSymbol
# A symbol the valuation works with: any of those, or the few columns a position row carries.
QuotedSymbol: TypeAlias = Symbol | SimSymbol | SymbolRow


class LockedAccount(NamedTuple):
    """The account row ``order_send`` locks, and whether any injected fault is pending."""

    id: int
    login: int
    server: str
    name: str
    company: str
    currency: str
    currency_digits: int
    leverage: int
    balance: Decimal
    credit: Decimal
    trade_mode: int
    trade_allowed: bool
    trade_expert: bool
    limit_orders: int
    margin_mode: int
    margin_so_call: Decimal
    margin_so_so: Decimal
    pending_faults: bool

    @property
    def pk(self) -> int:
        return self.id


class LockedPosition(NamedTuple):
    """The position a close or an SL/TP change targets, read under its row lock."""

    id: int
    ticket: int
    identifier: int
    type: int
    volume: Decimal
    price_open: Decimal
    sl: Decimal
    tp: Decimal
    swap: Decimal
    symbol: Symbol

    @property
    def pk(self) -> int:
        return self.id


class QuoteRow(NamedTuple):
    name: str
    bid: Decimal
    ask: Decimal


class OrderRow(NamedTuple):
    """An order read as plain values with its symbol's quote (duck-types SimOrder for the terminal's TradeOrder)."""

    ticket: int
    time_setup_msc: int
    time_done_msc: int
    time_expiration: int
    type: int
    type_time: int
    type_filling: int
    state: int
    magic: int
    position_id: int
    position_by_id: int
    reason: int
    volume_initial: Decimal
    volume_current: Decimal
    price_open: Decimal
    sl: Decimal
    tp: Decimal
    price_stoplimit: Decimal
    comment: str
    external_id: str
    is_open: bool
    symbol: QuoteRow


_POSITION_COLUMNS = PositionRow._fields[:-1]
_SYMBOL_COLUMNS = tuple("symbol_id" if f == "pk" else f"symbol__{f}" for f in SymbolRow._fields)
_ACCOUNT_COLUMNS = LockedAccount._fields[:-1]
_LOCKED_POSITION_COLUMNS = LockedPosition._fields[:-1]
_ORDER_COLUMNS = OrderRow._fields[:-1]
_DEAL_COLUMNS = TradeDeal._fields
# Where a deal row (TradeDeal's columns but ``time``) has its symbol.
DEAL_SYMBOL_AT = _DEAL_COLUMNS.index("symbol") - 1
_PG = "postgresql"


# --- positions ----------------------------------------------------------------------------------
def _positions_select(db: BaseDatabaseWrapper, *, ticket: bool, symbol: bool, ordered: bool) -> Select:
    """``PositionRow``s of an account's positions, optionally one ticket's or one symbol's."""
    cols = Columns(db).add(SimPosition, _POSITION_COLUMNS, "p")
    cols.add(SimSymbol, ("id" if f == "pk" else f for f in SymbolRow._fields), "s")
    where = [f"{column(SimPosition, 'account_id', 'p')} = %(account)s"]
    if ticket:
        where.append(f"{column(SimPosition, 'ticket', 'p')} = %(ticket)s")
    if symbol:
        where.append(f"{column(SimSymbol, 'name', 's')} = %(name)s")
    order = f" ORDER BY {column(SimPosition, 'time_msc', 'p')}, {column(SimPosition, 'ticket', 'p')}" if ordered else ""
    return cols.select(
        f"FROM {table(SimPosition)} {qn('p')} INNER JOIN {table(SimSymbol)} {qn('s')}"
        f" ON {column(SimSymbol, 'id', 's')} = {column(SimPosition, 'symbol_id', 'p')}"
        f" WHERE {' AND '.join(where)}{order}"
    )


def position_rows_of(account_id: int, *, ticket: int | None = None, symbol: str | None = None) -> list[PositionRow]:
    """``PositionRow``s of one account's positions in (time_msc, ticket) order."""
    key = f"positions:{ticket is not None}:{symbol is not None}"
    statement = cached(
        key, lambda db: _positions_select(db, ticket=ticket is not None, symbol=symbol is not None, ordered=True)
    )
    params = {
        "account": account_id,
        **prep(SimPosition, {"ticket": ticket}),
        **prep(SimSymbol, {"name": symbol}),
    }
    return _rows_to_positions(statement.rows(params))


def account_position_rows(account_id: int) -> list[PositionRow]:
    """Every position of one account, in no particular order (what its equity and margin need)."""
    statement = cached("account_positions", lambda db: _positions_select(db, ticket=False, symbol=False, ordered=False))
    return _rows_to_positions(statement.rows({"account": account_id}))


def _rows_to_positions(values_rows: Iterable[tuple[Any, ...]]) -> list[PositionRow]:
    symbols: dict[int, SymbolRow] = {}
    rows = []
    split = len(_POSITION_COLUMNS)
    for values in values_rows:
        symbol = symbols.get(values[split])
        if symbol is None:
            symbol = symbols[values[split]] = SymbolRow(*values[split:])
        rows.append(PositionRow._make((*values[:split], symbol)))
    return rows


# --- symbols and accounts -----------------------------------------------------------------------
def _symbols_select(db: BaseDatabaseWrapper, *, by_name: bool) -> Select:
    where = f" WHERE {column(SimSymbol, 'name')} = %(name)s" if by_name else ""
    return (
        Columns(db)
        .add(SimSymbol, Symbol._fields, "")
        .select(f"FROM {table(SimSymbol)}{where} ORDER BY {column(SimSymbol, 'name')}")
    )


def symbol_rows(**filters: Any) -> list[Symbol]:
    """Every symbol by name, or the one ``name=`` names, as whole rows."""
    if filters:
        statement = cached("symbol", lambda db: _symbols_select(db, by_name=True))
        params = prep(SimSymbol, filters)
    else:
        statement = cached("symbols", lambda db: _symbols_select(db, by_name=False))
        params = {}
    return [Symbol(*row) for row in statement.rows(params)]


def _account_select(db: BaseDatabaseWrapper) -> Select:
    cols = Columns(db).add(SimAccount, AccountRow._fields, "")
    return cols.select(f"FROM {table(SimAccount)} WHERE {column(SimAccount, 'id')} = %(account)s")


def account_row(account_id: int) -> AccountRow | None:
    found = cached("account", _account_select).rows({"account": account_id})
    return AccountRow(*found[0]) if found else None


def _fault_exists_sql() -> str:
    """Is any fault pending (a count left) or any outage running (``%(now)s`` before its end)?"""
    return (
        f"EXISTS(SELECT 1 FROM {table(SimFault)} WHERE {column(SimFault, 'remaining')} > 0"  # noqa: S608
        f" OR {column(SimFault, 'until_msc')} > %(now)s LIMIT 1)"
    )


def _outage_logins_select(db: BaseDatabaseWrapper) -> Select:
    return (
        Columns(db)
        .add(SimFault, ("login",), "")
        .select(
            f"FROM {table(SimFault)} WHERE {column(SimFault, 'kind')} = %(kind)s"
            f" AND {column(SimFault, 'until_msc')} > %(now)s AND {column(SimFault, 'symbol')} = ''"
        )
    )


def outage_logins(now_msc: int) -> set[int | None]:
    """The logins a ``no_connection`` outage not scoped to a symbol cuts off at ``now_msc``
    (None: every login)."""
    rows = cached("outage_logins", _outage_logins_select).rows({"kind": SimFaultKind.NO_CONNECTION, "now": now_msc})
    return {row[0] for row in rows}


class TerminalState(NamedTuple):
    account_id: int | None
    trade_allowed: bool
    tradeapi_disabled: bool
    cut_off: bool


def _terminal_state_select(db: BaseDatabaseWrapper) -> Select:
    """The terminal's shared state (its account and two switches) and whether a ``no_connection``
    outage cuts it off now (one of every account, or of the account it holds), in one round trip."""
    login = f"(SELECT {column(SimAccount, 'login', 'a')} FROM {table(SimAccount)} a WHERE {column(SimAccount, 'id', 'a')} = {column(SimTerminal, 'account_id', 't')})"  # noqa: S608, E501
    outage = (
        f"EXISTS(SELECT 1 FROM {table(SimFault)} f WHERE {column(SimFault, 'kind', 'f')} = %(kind)s"  # noqa: S608
        f" AND {column(SimFault, 'until_msc', 'f')} > %(now)s AND {column(SimFault, 'symbol', 'f')} = ''"
        f" AND ({column(SimFault, 'login', 'f')} IS NULL OR {column(SimFault, 'login', 'f')} = {login}))"
    )
    cols = Columns(db).add(SimTerminal, ("account_id", "trade_allowed", "tradeapi_disabled"), "t")
    cols.add_expression(outage, BooleanField())
    return cols.select(f"FROM {table(SimTerminal)} t WHERE {column(SimTerminal, 'id', 't')} = %(terminal)s")


def terminal_state(terminal_id: int, now_msc: int) -> TerminalState:
    """What a call to the terminal sees first (``terminal.SimulatedMetaTrader5._ready``)."""
    rows = cached("terminal_state", _terminal_state_select).rows(
        {"terminal": terminal_id, "now": now_msc, "kind": SimFaultKind.NO_CONNECTION}
    )
    if not rows:
        return TerminalState(None, True, False, bool(outage_logins(now_msc) & {None}))
    return TerminalState(*rows[0])


def _lock_account_select(db: BaseDatabaseWrapper) -> Select:
    """The account row, locked: what serialises an account's trades across processes."""
    cols = Columns(db).add(SimAccount, _ACCOUNT_COLUMNS, "")
    cols.add_expression(_fault_exists_sql(), BooleanField())
    lock = " FOR UPDATE" if db.vendor == _PG else ""
    return cols.select(f"FROM {table(SimAccount)} WHERE {column(SimAccount, 'id')} = %(account)s{lock}")


def lock_account(account_id: int, now_msc: int) -> LockedAccount | None:
    """The account row, locked, and whether a fault is pending or an outage running at ``now_msc``."""
    rows = cached("lock_account", _lock_account_select).rows({"account": account_id, "now": now_msc})
    return LockedAccount(*rows[0]) if rows else None


def _lock_account_and_position_select(db: BaseDatabaseWrapper) -> Select:
    """The account row locked, then the target position (with its symbol) locked, in one round
    trip. On PostgreSQL the account is locked in a materialised CTE and the position in a
    LATERAL subquery that depends on it, so the locks are taken in the order the two separate
    queries took them: account first. A position another transaction changed while this one
    waited is read in its committed version (a locking read follows the update), and one it
    deleted is not found, as before. SQLite has no row locks: its IMMEDIATE transaction already
    holds the database's write lock."""
    cols = Columns(db).add(SimAccount, _ACCOUNT_COLUMNS, "a")
    cols.add_expression(_fault_exists_sql(), BooleanField())
    cols.add(SimPosition, _LOCKED_POSITION_COLUMNS, "p")
    cols.add(SimSymbol, Symbol._fields, "s")
    a, p, s = qn("a"), qn("p"), qn("s")
    symbol_join = (
        f" LEFT JOIN {table(SimSymbol)} {s} ON {column(SimSymbol, 'id', 's')} = {column(SimPosition, 'symbol_id', 'p')}"
    )
    if db.vendor != _PG:
        return cols.select(
            f"FROM {table(SimAccount)} {a} LEFT JOIN {table(SimPosition)} {p}"
            f" ON {column(SimPosition, 'account_id', 'p')} = {column(SimAccount, 'id', 'a')}"
            f" AND {column(SimPosition, 'ticket', 'p')} = %(ticket)s{symbol_join}"
            f" WHERE {column(SimAccount, 'id', 'a')} = %(account)s"
        )
    account_cols = ", ".join(column(SimAccount, n) for n in _ACCOUNT_COLUMNS)
    position_cols = ", ".join(column(SimPosition, n) for n in (*_LOCKED_POSITION_COLUMNS, "symbol_id"))
    return cols.select(
        f"FROM {a} LEFT JOIN LATERAL (SELECT {position_cols} FROM {table(SimPosition)}"  # noqa: S608
        f" WHERE {column(SimPosition, 'account_id')} = {column(SimAccount, 'id', 'a')}"
        f" AND {column(SimPosition, 'ticket')} = %(ticket)s FOR UPDATE) {p} ON TRUE{symbol_join}",
        prefix=f"WITH {a} AS MATERIALIZED (SELECT {account_cols} FROM {table(SimAccount)}"  # noqa: S608
        f" WHERE {column(SimAccount, 'id')} = %(account)s FOR UPDATE) ",
    )


def lock_account_and_position(
    account_id: int, ticket: int, now_msc: int
) -> tuple[LockedAccount, LockedPosition | None] | None:
    """The locked account and its locked position ``ticket`` (None when it has none such);
    None when there is no such account."""
    rows = cached("lock_account_position", _lock_account_and_position_select).rows(
        {"account": account_id, "ticket": ticket, "now": now_msc}
    )
    if not rows:
        return None
    values = rows[0]
    split = len(LockedAccount._fields)
    account = LockedAccount(*values[:split])
    if values[split] is None:
        return account, None
    symbol_at = split + len(_LOCKED_POSITION_COLUMNS)
    return account, LockedPosition._make((*values[split:symbol_at], Symbol(*values[symbol_at:])))


# --- orders and deals ---------------------------------------------------------------------------
def _orders_select(db: BaseDatabaseWrapper, filters: tuple[str, ...]) -> Select:
    """An account's open or historical orders in (time_setup_msc, ticket) order; ``filters``
    names the optional conditions: window, position, ticket, symbol."""
    cols = Columns(db).add(SimOrder, _ORDER_COLUMNS, "o").add(SimSymbol, QuoteRow._fields, "s")
    where = [
        f"{column(SimOrder, 'account_id', 'o')} = %(account)s",
        f"{column(SimOrder, 'is_open', 'o')} = %(is_open)s",
    ]
    conditions = {
        "window": f"{column(SimOrder, 'time_setup_msc', 'o')} BETWEEN %(since)s AND %(until)s",
        "position": f"{column(SimOrder, 'position_id', 'o')} = %(position)s",
        "ticket": f"{column(SimOrder, 'ticket', 'o')} = %(ticket)s",
        "symbol": f"{column(SimSymbol, 'name', 's')} = %(name)s",
    }
    where += [conditions[f] for f in filters]
    return cols.select(
        f"FROM {table(SimOrder)} {qn('o')} INNER JOIN {table(SimSymbol)} {qn('s')}"
        f" ON {column(SimSymbol, 'id', 's')} = {column(SimOrder, 'symbol_id', 'o')}"
        f" WHERE {' AND '.join(where)} ORDER BY {column(SimOrder, 'time_setup_msc', 'o')},"
        f" {column(SimOrder, 'ticket', 'o')}"
    )


def order_rows(account_id: int, *, is_open: bool, **filters: Any) -> list[OrderRow]:
    """The ORM's ``SimOrder.objects.filter(...).select_related("symbol")`` read, as plain rows;
    ``filters`` are window=(since, until), position=, ticket=, symbol=, each only when not None."""
    used = tuple(name for name in ("window", "position", "ticket", "symbol") if filters.get(name) is not None)
    statement = cached(f"orders:{','.join(used)}", lambda db: _orders_select(db, used))
    params: dict[str, Any] = {"account": account_id, **prep(SimOrder, {"is_open": is_open})}
    if "window" in used:
        params["since"], params["until"] = (
            prep(SimOrder, {"time_setup_msc": v})["time_setup_msc"] for v in filters["window"]
        )
    if "position" in used:
        params["position"] = prep(SimOrder, {"position_id": filters["position"]})["position_id"]
    if "ticket" in used:
        params["ticket"] = prep(SimOrder, {"ticket": filters["ticket"]})["ticket"]
    if "symbol" in used:
        params["name"] = prep(SimSymbol, {"name": filters["symbol"]})["name"]
    split = len(_ORDER_COLUMNS)
    return [OrderRow._make((*row[:split], QuoteRow(*row[split:]))) for row in statement.rows(params)]


def _deals_select(db: BaseDatabaseWrapper, filters: tuple[str, ...]) -> Select:
    cols = Columns(db).add(SimDeal, _DEAL_COLUMNS[:2], "").add(SimDeal, _DEAL_COLUMNS[3:], "")
    conditions = {
        "window": f"{column(SimDeal, 'time_msc')} BETWEEN %(since)s AND %(until)s",
        "ticket": f"{column(SimDeal, 'ticket')} = %(ticket)s",
        "position": f"{column(SimDeal, 'position_id')} = %(position)s",
    }
    where = [f"{column(SimDeal, 'account_id')} = %(account)s", *(conditions[f] for f in filters)]
    return cols.select(
        f"FROM {table(SimDeal)} WHERE {' AND '.join(where)}"
        f" ORDER BY {column(SimDeal, 'time_msc')}, {column(SimDeal, 'ticket')}"
    )


def deal_rows(
    account_id: int, *, window: tuple[int, int] | None, ticket: int | None, position: int | None
) -> list[tuple[Any, ...]]:
    """An account's deals in (time_msc, ticket) order, each as TradeDeal's columns in its order
    with ``time`` left out; narrowed to the epoch-ms ``window``, the ``ticket``, the ``position``
    that are not None."""
    used = tuple(n for n, v in (("window", window), ("ticket", ticket), ("position", position)) if v is not None)
    statement = cached(f"deals:{','.join(used)}", lambda db: _deals_select(db, used))
    params: dict[str, Any] = {"account": account_id}
    if window is not None:
        params["since"], params["until"] = (prep(SimDeal, {"time_msc": v})["time_msc"] for v in window)
    if ticket is not None:
        params["ticket"] = prep(SimDeal, {"ticket": ticket})["ticket"]
    if position is not None:
        params["position"] = prep(SimDeal, {"position_id": position})["position_id"]
    return statement.rows(params)


# --- writes -------------------------------------------------------------------------------------
def update(model: type[Model], pk: int, **values: Any) -> None:
    """``model.objects.filter(pk=pk).update(**values)`` from an UPDATE built once."""
    names = tuple(values)
    statement = cached(f"update:{model._meta.label}:{','.join(names)}", lambda db: update_sql(model, names))
    execute(statement, {**prep(model, values), "pk": pk})


def add_to_balance(account_id: int, amount: Decimal) -> None:
    """``balance = balance + amount`` in the database, so the sum is taken under the row lock."""
    statement = cached(
        "add_to_balance",
        lambda db: (
            f"UPDATE {table(SimAccount)} SET {column(SimAccount, 'balance')} ="  # noqa: S608
            f" {column(SimAccount, 'balance')} + %(amount)s WHERE {column(SimAccount, 'id')} = %(pk)s"
        ),
    )
    execute(statement, {"amount": prep(SimAccount, {"balance": amount})["balance"], "pk": account_id})


def delete_position(pk: int) -> None:
    statement = cached(
        "delete_position",
        lambda db: f"DELETE FROM {table(SimPosition)} WHERE {column(SimPosition, 'id')} = %(pk)s",  # noqa: S608
    )
    execute(statement, {"pk": pk})


def advance_ticket_sequence(count: int) -> int | None:
    """Add ``count`` to the ticket counter and return its new value; None while the counter row
    does not exist. The UPDATE's row lock is held until the caller's transaction ends."""
    sql = f"UPDATE {table(SimTicketSequence)} SET value = value + %s WHERE id = 1 RETURNING value"  # noqa: S608 - a model's own table name
    with connection.cursor() as cursor:
        cursor.execute(sql, [count])
        row = cursor.fetchone()
    return None if row is None else int(row[0])


# --- bulk reads (the Manager API's batch requests): many accounts in a few queries ---------------
def any_of(queryset: Any, name: str, values: list[int]) -> Any:
    """``name IN values`` for bulk reads; on PostgreSQL one array parameter, because a
    thousand placeholders cost the driver and the ORM more than the query itself."""
    if connections[queryset.db].vendor != _PG:
        return queryset.filter(**{f"{name}__in": values})
    # The array as one text literal: the driver's client-side quoting of a list is slower.
    condition = f'"{queryset.model._meta.db_table}"."{name}" = ANY(%s::bigint[])'
    literal = "{" + ",".join(map(str, map(int, values))) + "}"
    return queryset.filter(RawSQL(condition, (literal,), output_field=BooleanField()))  # noqa: S611 - names are the model's


def bulk_position_rows(queryset: Any, by_account: dict[int, list[PositionRow]]) -> list[PositionRow]:
    """``PositionRow``s with each row's account: appended to ``by_account``, and all returned."""
    symbols: dict[int, SymbolRow] = {}
    rows = []
    split = len(_POSITION_COLUMNS) + 1
    for values in queryset.values_list("account_id", *_POSITION_COLUMNS, *_SYMBOL_COLUMNS):
        symbol = symbols.get(values[split])
        if symbol is None:
            symbol = symbols[values[split]] = SymbolRow(*values[split:])
        row = PositionRow._make((*values[1:split], symbol))
        rows.append(row)
        by_account[values[0]].append(row)
    return rows
