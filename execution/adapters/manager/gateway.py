"""``ManagerGateway``: the Gateway over one Manager API connection (``MT5Manager`` or the
simulator's surface of it), for every account of the server the manager may access.

No per-account login: every call names its account by login on the one connection. Reads
that can declare a breach ask the server (``*Request*``, ``verify.PUMPED_EQUITY_FOLLOWS_TICKS``);
trades are ``DealerSend`` requests from the dealer's seat carrying the bridge's tag as their
Comment, answered asynchronously (``ManagerConnection.dealer_send``). An answer that does not
come is reconciled by tag at once: the deal (or order, or SL/TP) the request made is looked
for, and only when none is found is the result ``maybe_executed`` for the caller to reconcile
again before any retry. ``set_server_trade_disabled`` sets or clears the user's
``USER_RIGHT_TRADE_DISABLED``, so the trader's own terminal is refused too.

Volumes are lots x 10,000 on the wire; times are the server's wall clock (its offset from UTC
is learned from ``TimeServer`` at each connect).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from execution.adapters.manager import verify
from execution.adapters.manager.connection import LINK_ERRORS, DealerPending, ManagerConnection
from execution.adapters.official.conversion import (
    DEAL_ENTRY_NAMES,
    DEAL_TYPE_NAMES,
    ORDER_STATE_NAMES,
    ORDER_TYPE_NAMES,
    PENDING_TYPES,
    dec,
    money,
    optional_price,
    quantum,
    side_of,
    utc_ms,
    window,
)
from execution.gateway import (
    COMMENT_LIMIT,
    DONE,
    FINAL,
    RETRY,
    AccountSnapshot,
    Deal,
    Gateway,
    GatewayUnavailable,
    PendingOrder,
    Position,
    Side,
    SymbolInfo,
    TradeResult,
    classify,
)
from execution.group_masks import group_matches
from execution.simulator import constants as c

VOLUME_UNITS = Decimal(10_000)
TA_DEALER_POS_EXECUTE, TA_DEALER_ORD_PENDING, TA_DEALER_POS_MODIFY, TA_DEALER_ORD_REMOVE = 200, 201, 202, 204
USER_RIGHT_TRADE_DISABLED = 0x4
MARGIN_MODE_RETAIL = 0  # netting; 2 is hedging
DEAL_ENTRY_IN = 0
# A close that follows a read of its position within this long is sent from that read.
READ_REUSE_SECONDS = 1.0
MT_RET_NAMES = {0: "OK", 1: "OK_NONE", 2: "ERROR", 3: "ERR_PARAMS", 7: "ERR_NETWORK", 8: "ERR_PERMISSIONS",
                9: "ERR_TIMEOUT", 10: "ERR_CONNECTION", 12: "ERR_FREQUENT", 13: "ERR_NOTFOUND"}  # fmt: skip


class _Revalued:
    """A pumped ``MTPosition`` seen at a later price: ``Profit`` and ``PriceCurrent`` replaced,
    every other field the record's (which is the binding's and never edited)."""

    __slots__ = ("PriceCurrent", "Profit", "_raw")

    def __init__(self, raw: Any, profit: float, price: float) -> None:
        self._raw, self.Profit, self.PriceCurrent = raw, profit, price

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)


def lots(units: Any) -> Decimal:
    return Decimal(int(units)) / VOLUME_UNITS


def units(volume: Decimal) -> int:
    return int((volume * VOLUME_UNITS).to_integral_value())


class ManagerGateway(Gateway):
    backend = "manager"
    server_side_trading = True

    def __init__(self, connection: ManagerConnection, *, groups: str = "*") -> None:
        self.conn = connection
        self.groups = groups
        self._group_info: dict[str, tuple[str, bool]] = {}  # group: (currency, nets)
        # Each open position's (entry commission, entry lots), read once from its deals.
        self._entry_costs: dict[int, tuple[Decimal, Decimal]] = {}
        self._last_read: tuple[int, int, Any, float, int] | None = None

    # --- conversions -------------------------------------------------------------------------------
    @property
    def _offset(self) -> timedelta:
        return self.conn.server_offset

    def _position(self, raw: Any, digits: int, commission: Decimal) -> Position:
        return Position(
            ticket=int(raw.Position), symbol=str(raw.Symbol), side="buy" if int(raw.Action) == 0 else "sell",
            volume=lots(raw.Volume), price_open=dec(raw.PriceOpen), price_current=dec(raw.PriceCurrent),
            sl=optional_price(raw.PriceSL), tp=optional_price(raw.PriceTP), profit=money(raw.Profit, digits),
            swap=money(raw.Storage, digits), commission=commission, magic=int(raw.ExpertID),
            comment=str(raw.Comment), opened_at=utc_ms(int(raw.TimeCreateMsc), self._offset),
            identifier=int(raw.Position),
        )  # fmt: skip

    def _order(self, raw: Any) -> PendingOrder:
        done = int(raw.TimeDoneMsc)
        return PendingOrder(
            ticket=int(raw.Order), symbol=str(raw.Symbol), side=side_of(int(raw.Type)),
            order_type=ORDER_TYPE_NAMES.get(int(raw.Type), str(raw.Type)),
            state=ORDER_STATE_NAMES.get(int(raw.State), str(raw.State)), volume_initial=lots(raw.VolumeInitial),
            volume_current=lots(raw.VolumeCurrent), price_open=dec(raw.PriceOrder),
            price_current=dec(raw.PriceCurrent), sl=optional_price(raw.PriceSL), tp=optional_price(raw.PriceTP),
            magic=int(raw.ExpertID), comment=str(raw.Comment), position_id=int(raw.PositionID),
            placed_at=utc_ms(int(raw.TimeSetupMsc), self._offset),
            done_at=utc_ms(done, self._offset) if done else None,
        )  # fmt: skip

    def _deal(self, raw: Any, digits: int) -> Deal:
        return Deal(
            ticket=int(raw.Deal), order=int(raw.Order), position_id=int(raw.PositionID), symbol=str(raw.Symbol),
            side=DEAL_TYPE_NAMES.get(int(raw.Action), str(raw.Action)),
            entry=DEAL_ENTRY_NAMES.get(int(raw.Entry), str(raw.Entry)), volume=lots(raw.Volume),
            price=dec(raw.Price), profit=money(raw.Profit, digits), commission=money(raw.Commission, digits),
            swap=money(raw.Storage, digits), magic=int(raw.ExpertID), comment=str(raw.Comment),
            time=utc_ms(int(raw.TimeMsc), self._offset),
        )  # fmt: skip

    def _window(self, since: datetime) -> tuple[int, int]:
        return window(since, self._offset)

    # --- accounts ------------------------------------------------------------------------------------
    def _group(self, name: str) -> tuple[str, bool]:
        """(deposit currency, nets) of a group: both are the group's in MT5."""
        if name not in self._group_info:
            group = self.conn.record("GroupGet", name)
            if group is None:
                raise GatewayUnavailable(f"group {name!r} is not pumped by this manager")
            self._group_info[name] = (str(group.Currency), int(group.MarginMode) == MARGIN_MODE_RETAIL)
        return self._group_info[name]

    def _user(self, login: int) -> Any:
        user = self.conn.record("UserGet", login)
        if user is None:
            raise GatewayUnavailable(f"account {login} is not on this manager's server (or not in its groups)")
        return user

    def account_snapshot(self, login: int, server: str) -> AccountSnapshot:
        found = self.account_snapshots([(login, server)])[(login, server)]
        if isinstance(found, Exception):
            raise found
        return found

    def account_snapshots(
        self, accounts: Iterable[tuple[int, str]]
    ) -> dict[tuple[int, str], AccountSnapshot | Exception]:
        """Every account in a few bulk reads: users, accounts, positions, orders (+ deals for new
        positions' commissions), whatever their number."""
        keys = list(accounts)
        logins = sorted({login for login, _ in keys})
        live = verify.PUMPED_EQUITY_FOLLOWS_TICKS
        with self.conn.lock:
            users = {int(u.Login): u for u in self.conn.records("UserGetByLogins", logins)}
            raw_accounts = self.conn.records("UserAccountGetByLogins" if live else "UserAccountRequestByLogins", logins)
            raw_positions = self.conn.records("PositionGetByLogins" if live else "PositionRequestByLogins", logins)
            raw_orders = self.conn.records("OrderRequestByLogins", logins)
            observed_at = datetime.now(UTC)
            by_login: dict[int, Any] = {int(a.Login): a for a in raw_accounts}
            positions, orders = _by_login(raw_positions, logins), _by_login(raw_orders, logins)
            self._load_entry_costs([p for p in raw_positions if int(p.Position) not in self._entry_costs])
            out: dict[tuple[int, str], AccountSnapshot | Exception] = {}
            for login, server in keys:
                account, user = by_login.get(login), users.get(login)
                if account is None or user is None:
                    out[(login, server)] = GatewayUnavailable(f"account {login} is not on this manager's server")
                    continue
                if not group_matches(str(user.Group), self.groups):
                    out[(login, server)] = GatewayUnavailable(
                        f"account {login} is in group {user.Group}, outside MT5_MANAGER_GROUPS ({self.groups})"
                    )
                    continue
                currency, _ = self._group(str(user.Group))
                out[(login, server)] = self._snapshot(
                    login, server, currency, account, user, positions[login], orders[login], observed_at
                )
        if len(self._entry_costs) > 100_000:  # forget closed positions' costs now and then
            open_now = {int(p.Position) for p in raw_positions}
            self._entry_costs = {t: cost for t, cost in self._entry_costs.items() if t in open_now}
        return out

    def _snapshot(
        self, login: int, server: str, currency: str, account: Any, user: Any, raw_positions: list[Any],
        raw_orders: list[Any], observed_at: datetime,
    ) -> AccountSnapshot:  # fmt: skip
        digits = int(account.CurrencyDigits)

        def amount(value: float) -> Decimal:
            return money(value, digits)

        return AccountSnapshot(
            login=login, server=server, currency=currency, currency_digits=digits,
            leverage=int(account.MarginLeverage), balance=amount(account.Balance), credit=amount(account.Credit),
            equity=amount(account.Equity), margin=amount(account.Margin), margin_free=amount(account.MarginFree),
            margin_level=dec(account.MarginLevel).quantize(Decimal("0.01")), profit=amount(account.Floating),
            positions=tuple(self._position(p, digits, self._commission(p, digits)) for p in raw_positions),
            orders=tuple(self._order(o) for o in raw_orders), observed_at=observed_at,
            trade_allowed=not int(user.Rights) & USER_RIGHT_TRADE_DISABLED,
        )  # fmt: skip

    def _load_entry_costs(self, missing: list[Any]) -> None:
        """The entry deals of positions not seen before, in one read over their logins."""
        if not missing:
            return
        since = min(utc_ms(int(p.TimeCreateMsc), self._offset) for p in missing)
        start, end = self._window(since)
        deals = self.conn.records("DealRequestByLogins", sorted({int(p.Login) for p in missing}), start, end)
        wanted = {int(p.Position) for p in missing}
        found: dict[int, tuple[Decimal, Decimal]] = {}
        for deal in deals:
            position_id = int(deal.PositionID)
            if position_id in wanted and int(deal.Entry) == DEAL_ENTRY_IN:
                fee, volume = found.get(position_id, (Decimal(0), Decimal(0)))
                found[position_id] = (fee + dec(deal.Commission), volume + lots(deal.Volume))
        for ticket in wanted:
            self._entry_costs[ticket] = found.get(ticket, (Decimal(0), Decimal(0)))

    def _commission(self, raw: Any, digits: int) -> Decimal:
        fee, volume = self._entry_costs.get(int(raw.Position), (Decimal(0), Decimal(0)))
        share = fee * lots(raw.Volume) / volume if volume else fee
        return share.quantize(quantum(digits))

    def in_groups(self, logins: Iterable[int]) -> set[int]:
        """The logins whose group is within ``MT5_MANAGER_GROUPS`` (the pumped users: no round trip)."""
        users = self.conn.records("UserGetByLogins", sorted(set(logins)))
        return {int(u.Login) for u in users if group_matches(str(u.Group), self.groups)}

    def pumped_snapshots(
        self, revalued: dict[tuple[int, str], tuple[float, dict[int, tuple[float, float]]]]
    ) -> dict[tuple[int, str], AccountSnapshot | Exception]:
        """Snapshots from the pumped copy, no round trip: the positions, orders, rights and
        balances the server's events put there, with equity and each position's profit and
        price from the caller's revaluation at the latest ticks (``revalued``: key -> (equity,
        {ticket: (profit, current price)})), since the pumped equity is not known to follow
        every tick (``verify.PUMPED_EQUITY_FOLLOWS_TICKS``). An account whose pumped positions
        are not exactly the revaluation's (an event not yet seen by the caller) is an
        exception: read it from the server instead."""
        keys = list(revalued)
        logins = sorted({login for login, _ in keys})
        with self.conn.lock:
            users = {int(u.Login): u for u in self.conn.records("UserGetByLogins", logins)}
            accounts = {int(a.Login): a for a in self.conn.records("UserAccountGetByLogins", logins)}
            raw_positions = self.conn.records("PositionGetByLogins", logins)
            raw_orders = self.conn.records("OrderGetByLogins", logins)
            observed_at = datetime.now(UTC)
            positions, orders = _by_login(raw_positions, logins), _by_login(raw_orders, logins)
            self._load_entry_costs([p for p in raw_positions if int(p.Position) not in self._entry_costs])
            out: dict[tuple[int, str], AccountSnapshot | Exception] = {}
            for key in keys:
                login, server = key
                equity, values = revalued[key]
                account, user = accounts.get(login), users.get(login)
                held = positions[login]
                if account is None or user is None or {int(p.Position) for p in held} != set(values):
                    out[key] = GatewayUnavailable(f"account {login}: the pumped copy and the revaluation differ")
                    continue
                if not group_matches(str(user.Group), self.groups):
                    out[key] = GatewayUnavailable(f"account {login} is outside MT5_MANAGER_GROUPS ({self.groups})")
                    continue
                current = []
                for p in held:
                    profit, price = values[int(p.Position)]
                    current.append(_Revalued(p, profit, price))
                snapshot = self._snapshot(
                    login, server, self._group(str(user.Group))[0], account, user, current, orders[login], observed_at
                )
                digits = int(account.CurrencyDigits)
                out[key] = replace(
                    snapshot,
                    equity=money(equity, digits),
                    profit=money(equity - float(account.Balance) - float(account.Credit), digits),
                )
        return out

    def position(self, login: int, server: str, ticket: int) -> Position | None:
        """The position as the server has it now: one round trip (``PositionRequest``). A close
        of it that follows at once is sent from this read (``close_position``)."""
        raw = self._raw_position(login, ticket)
        if raw is None:
            return None
        digits = self._pumped_digits(login)
        if int(raw.Position) not in self._entry_costs:
            self._load_entry_costs([raw])
        return self._position(raw, digits, self._commission(raw, digits))

    def _pumped_digits(self, login: int) -> int:
        account = self.conn.record("UserAccountGet", login)
        return int(account.CurrencyDigits) if account is not None else self._digits(login)

    def _nets(self, login: int) -> bool:
        return self._group(str(self._user(login).Group))[1]

    def netting_position(self, login: int, server: str, symbol: str) -> Position | None:
        if not self._nets(login):
            return None
        return next((p for p in self.account_snapshot(login, server).positions if p.symbol == symbol), None)

    def _raw_position(self, login: int, ticket: int) -> Any:
        raw = next((p for p in self.conn.records("PositionRequest", login) if int(p.Position) == ticket), None)
        self._last_read = (login, ticket, raw, time.monotonic(), self.conn.generation)
        return raw

    def _just_read(self, login: int, ticket: int) -> Any:
        """The position ``_raw_position`` read last, if it is this one, on this connection, and
        younger than ``READ_REUSE_SECONDS``; used once."""
        last, self._last_read = self._last_read, None
        if last is None:
            return None
        read_login, read_ticket, raw, at, generation = last
        fresh = time.monotonic() - at <= READ_REUSE_SECONDS and generation == self.conn.generation
        return raw if fresh and (read_login, read_ticket) == (login, ticket) else None

    # --- symbols ----------------------------------------------------------------------------------------
    def _symbol(self, name: str) -> Any:
        return self.conn.record("SymbolGet", name)

    def symbol_info(self, login: int, server: str, symbol: str) -> SymbolInfo | None:
        with self.conn.lock:
            info = self._symbol(symbol)
            if info is None:
                return None
            tick = self.conn.record("TickLast", symbol)
        bid, ask = (dec(tick.bid), dec(tick.ask)) if tick is not None else (Decimal(0), Decimal(0))
        point = dec(info.Point)
        return SymbolInfo(
            name=str(info.Symbol), description=str(info.Description), digits=int(info.Digits), point=point,
            contract_size=dec(info.ContractSize), volume_min=lots(info.VolumeMin), volume_max=lots(info.VolumeMax),
            volume_step=lots(info.VolumeStep), filling_mode=int(info.FillFlags), trade_mode=int(info.TradeMode),
            trade_exemode=int(info.ExecMode), stops_level=int(info.StopsLevel), bid=bid, ask=ask,
            spread=int(((ask - bid) / point).to_integral_value()) if point else 0, tick_value=dec(info.TickValue),
            tick_size=dec(info.TickSize), currency_base=str(info.CurrencyBase),
            currency_profit=str(info.CurrencyProfit), currency_margin=str(info.CurrencyMargin),
            quoted_at=utc_ms(int(tick.datetime_msc), self._offset) if tick is not None else datetime.now(UTC),
        )  # fmt: skip

    # --- dealing ------------------------------------------------------------------------------------------
    @staticmethod
    def _check_tag(tag: str) -> None:
        if not tag or len(tag) > COMMENT_LIMIT:
            raise ValueError(f"an MT5 tag must be 1-{COMMENT_LIMIT} characters; use gateway.order_tag()")

    def _request(self, **fields: Any) -> tuple[Any, dict[str, Any]]:
        request = self.conn.new("MTRequest")
        for name, value in fields.items():
            setattr(request, name, value)
        return request, dict(fields)

    def _refused(self, code: int, text: str, fields: dict[str, Any], position: int = 0) -> TradeResult:
        """DealerSend would not queue the request (nothing was sent)."""
        if code in LINK_ERRORS:
            raise GatewayUnavailable(f"Manager API DealerSend failed: ({code}) {text}", code=code)
        return TradeResult(
            outcome=RETRY if code in (9, 12) else FINAL, retcode=code,
            retcode_name=f"MT_RET_{MT_RET_NAMES.get(code, code)}", message=f"DealerSend refused: {text}",
            request=fields, position=position,
        )  # fmt: skip

    def _answered(self, answer: Any, fields: dict[str, Any], position: int) -> TradeResult:
        info = classify(int(answer.ResultRetcode))
        volume = lots(answer.ResultVolume)
        requested = lots(fields.get("Volume") or 0)
        partial = info.code == c.TRADE_RETCODE_DONE_PARTIAL
        message = str(answer.ResultComment or "") or info.message
        if partial:
            message = f"{message}: {volume} of {requested} lots filled"
        return TradeResult(
            outcome=info.outcome, retcode=info.code, retcode_name=info.name, message=message,
            order=int(answer.ResultOrder), deal=int(answer.ResultDeal), volume=volume, price=dec(answer.ResultPrice),
            request=fields, comment=str(answer.ResultComment or ""),
            maybe_executed=info.code == c.TRADE_RETCODE_TIMEOUT, position=position, partial=partial,
            requested_volume=requested,
        )  # fmt: skip

    def _lost(self, fields: dict[str, Any], position: int, detail: str) -> TradeResult:
        return TradeResult(
            outcome=RETRY, retcode=c.TRADE_RETCODE_TIMEOUT, retcode_name="TRADE_RETCODE_TIMEOUT",
            message=f"no dealer answer ({detail}); nothing found by tag yet: reconcile before any retry",
            request=fields, maybe_executed=True, position=position,
        )  # fmt: skip

    def _deal_request(
        self, login: int, tag: str, position: int, sent_at: datetime, **fields: Any
    ) -> TradeResult:  # fmt: skip
        """A market deal (open or close): send, wait, and on a lost answer look for its deal."""
        request, shown = self._request(Login=login, Comment=tag, **fields)
        sent, answer = self.conn.dealer_send(request, tag)
        if not sent:
            code, text = self.conn.last_error
            return self._refused(code, text, shown, position)
        if answer is not None:
            result = self._answered(answer, shown, position)
            if result.ok and not position:
                result = self._with_opened_position(login, result, tag, sent_at)
            return result
        deals = [d for d in self._tagged_deals(login, tag, sent_at) if d.symbol == fields.get("Symbol")]
        if not deals:
            return self._lost(shown, position, f"{self.conn.answer_timeout:g} s")
        filled = sum((d.volume for d in deals), Decimal(0))
        requested = lots(fields.get("Volume") or 0)
        partial = filled < requested
        code = c.TRADE_RETCODE_DONE_PARTIAL if partial else c.TRADE_RETCODE_DONE
        last = deals[-1]
        return TradeResult(
            outcome=DONE, retcode=code, retcode_name=classify(code).name,
            message=f"dealer answer lost; reconciled by tag: deal {last.ticket}", order=last.order, deal=last.ticket,
            volume=filled, price=last.price, request=shown, position=position or last.position_id, partial=partial,
            requested_volume=requested,
        )  # fmt: skip

    def _with_opened_position(self, login: int, result: TradeResult, tag: str, sent_at: datetime) -> TradeResult:
        """The position an open made: the order's ticket on hedging, the deal's position on netting."""
        if not self._nets(login):
            return replace(result, position=result.order)
        deal = next((d for d in self._tagged_deals(login, tag, sent_at) if d.ticket == result.deal), None)
        return replace(result, position=deal.position_id if deal else result.order)

    def _tagged_deals(self, login: int, tag: str, since: datetime) -> list[Deal]:
        digits = self._digits(login)
        start, end = self._window(since)
        raw = self.conn.records("DealRequest", login, start, end)
        return [self._deal(d, digits) for d in raw if str(d.Comment) == tag and self._magic_ok(d)]

    @staticmethod
    def _magic_ok(raw: Any) -> bool:
        return not verify.MATCH_MAGIC or int(raw.ExpertID) != 0

    @staticmethod
    def _now() -> datetime:
        return datetime.now(UTC) - timedelta(seconds=1)

    def open_position(
        self, login: int, server: str, *, symbol: str, side: Side, volume: Decimal, price: Decimal | None = None,
        sl: Decimal | None = None, tp: Decimal | None = None, deviation: int = 20, tag: str,
    ) -> TradeResult:  # fmt: skip
        self._check_tag(tag)
        info = self._symbol(symbol)
        if info is None:
            return TradeResult(FINAL, c.TRADE_RETCODE_INVALID, "TRADE_RETCODE_INVALID", f"Unknown symbol {symbol!r}")
        fields: dict[str, Any] = {
            "Action": TA_DEALER_POS_EXECUTE, "Symbol": symbol, "Position": 0, "Type": 0 if side == "buy" else 1,
            "Volume": units(volume), "TypeFill": verify.type_fill(int(info.FillFlags)),
            "PriceSL": float(sl or 0), "PriceTP": float(tp or 0),
        }  # fmt: skip
        if price is None:
            fields.update(Flags=verify.TA_FLAG_MARKET, PriceOrder=0.0)
        else:
            fields.update(PriceOrder=float(price), PriceDeviation=int(deviation))
        return self._deal_request(login, tag, 0, self._now(), **fields)

    def close_position(
        self, login: int, server: str, *, ticket: int, volume: Decimal | None = None, deviation: int = 20, tag: str
    ) -> TradeResult:
        """Close ``volume`` lots (all when None) at market, from the dealer's seat."""
        self._check_tag(tag)
        # The position the caller has just read (``position``, within READ_REUSE_SECONDS) is not
        # asked for again: the close goes out with its side and volume.
        raw = self._just_read(login, ticket) or self._raw_position(login, ticket)
        if raw is None:
            return TradeResult(
                FINAL, c.TRADE_RETCODE_POSITION_CLOSED, "TRADE_RETCODE_POSITION_CLOSED",
                f"Position {ticket} is not open", position=ticket,
            )  # fmt: skip
        info = self._symbol(str(raw.Symbol))
        fields = {
            "Action": TA_DEALER_POS_EXECUTE, "Symbol": str(raw.Symbol), "Position": int(ticket),
            "Type": 1 if int(raw.Action) == 0 else 0,
            "Volume": units(volume) if volume is not None else int(raw.Volume),
            "Flags": verify.TA_FLAG_MARKET, "PriceOrder": 0.0,
            "TypeFill": verify.type_fill(int(info.FillFlags)) if info is not None else verify.FILL_IOC,
        }  # fmt: skip
        return self._deal_request(login, tag, ticket, self._now(), **fields)

    def close_ahead(self, login: int, server: str, position: Position, *, tag: str) -> DealerPending | None:
        """Queue a market close of ``position`` as the pumped copy shows it (its side, its whole
        volume) and return without waiting: no read before it and no answer awaited (the event
        monitor's close sent before its action is recorded). None when DealerSend refused it
        (nothing was sent). ``close_outcome`` says later what became of it (the terminal router's
        pair has the same shape: ``risk.ahead``)."""
        self._check_tag(tag)
        info = self._symbol(position.symbol)
        request, _ = self._request(
            Action=TA_DEALER_POS_EXECUTE, Login=login, Symbol=position.symbol, Position=int(position.ticket),
            Type=1 if position.side == "buy" else 0, Volume=units(position.volume), Flags=verify.TA_FLAG_MARKET,
            PriceOrder=0.0, TypeFill=verify.type_fill(int(info.FillFlags)) if info is not None else verify.FILL_IOC,
            Comment=tag,
        )  # fmt: skip
        return self.conn.dealer_submit(request, tag)

    def close_outcome(self, pending: DealerPending) -> Literal["filled", "refused", "in_flight"]:
        """What a ``close_ahead`` came to so far, without waiting: ``filled`` (in full or in part),
        ``refused`` (a final answer that filled nothing), or ``in_flight`` (no final answer yet,
        or the answer was lost with the link: only a deal found by its tag can tell)."""
        settled, answer = self.conn.dealer_poll(pending)
        if not settled or answer is None:
            return "in_flight"
        code = int(answer.ResultRetcode)
        return "filled" if code in (c.TRADE_RETCODE_DONE, c.TRADE_RETCODE_DONE_PARTIAL) else "refused"

    def modify_position(
        self, login: int, server: str, *, ticket: int, sl: Decimal | None = None, tp: Decimal | None = None, tag: str
    ) -> TradeResult:
        """Set SL/TP. ``None`` keeps the current level; ``Decimal(0)`` removes it."""
        self._check_tag(tag)
        raw = self._raw_position(login, ticket)
        if raw is None:
            return TradeResult(
                FINAL, c.TRADE_RETCODE_POSITION_CLOSED, "TRADE_RETCODE_POSITION_CLOSED",
                f"Position {ticket} is not open", position=ticket,
            )  # fmt: skip
        want_sl = float(sl) if sl is not None else float(raw.PriceSL)
        want_tp = float(tp) if tp is not None else float(raw.PriceTP)
        request, shown = self._request(
            Action=TA_DEALER_POS_MODIFY, Login=login, Symbol=str(raw.Symbol), Position=int(ticket),
            PriceSL=want_sl, PriceTP=want_tp, Comment=tag,
        )  # fmt: skip
        sent, answer = self.conn.dealer_send(request, tag)
        if not sent:
            return self._refused(*self.conn.last_error, shown, ticket)
        if answer is not None:
            return self._answered(answer, shown, ticket)
        now = self._raw_position(login, ticket)
        if now is not None and (float(now.PriceSL), float(now.PriceTP)) == (want_sl, want_tp):
            return TradeResult(
                DONE, c.TRADE_RETCODE_DONE, "TRADE_RETCODE_DONE",
                "dealer answer lost; reconciled: the position has the SL/TP asked for", request=shown, position=ticket,
            )  # fmt: skip
        return self._lost(shown, ticket, f"{self.conn.answer_timeout:g} s")

    def place_pending_order(
        self, login: int, server: str, *, symbol: str, side: Side, kind: Literal["limit", "stop"], volume: Decimal,
        price: Decimal, sl: Decimal | None = None, tp: Decimal | None = None, tag: str,
    ) -> TradeResult:  # fmt: skip
        self._check_tag(tag)
        info = self._symbol(symbol)
        if info is None:
            return TradeResult(FINAL, c.TRADE_RETCODE_INVALID, "TRADE_RETCODE_INVALID", f"Unknown symbol {symbol!r}")
        sent_at = self._now()
        request, shown = self._request(
            Action=TA_DEALER_ORD_PENDING, Login=login, Symbol=symbol, Type=PENDING_TYPES[(side, kind)],
            Volume=units(volume), PriceOrder=float(price), PriceSL=float(sl or 0), PriceTP=float(tp or 0),
            TypeFill=verify.type_fill(int(info.FillFlags)), Comment=tag,
        )  # fmt: skip
        sent, answer = self.conn.dealer_send(request, tag)
        if not sent:
            return self._refused(*self.conn.last_error, shown)
        if answer is not None:
            return self._answered(answer, shown, 0)
        placed = self.orders_by_tag(login, server, tag=tag, since=sent_at)
        if placed:
            return TradeResult(
                DONE, c.TRADE_RETCODE_PLACED, "TRADE_RETCODE_PLACED",
                f"dealer answer lost; reconciled by tag: order {placed[0].ticket}", order=placed[0].ticket,
                volume=placed[0].volume_initial, price=placed[0].price_open, request=shown,
            )  # fmt: skip
        return self._lost(shown, 0, f"{self.conn.answer_timeout:g} s")

    def cancel_order(self, login: int, server: str, *, ticket: int, tag: str) -> TradeResult:
        self._check_tag(tag)
        live = {int(o.Order) for o in self.conn.records("OrderRequestOpen", login)}
        if ticket not in live:
            return TradeResult(
                FINAL, c.TRADE_RETCODE_INVALID, "TRADE_RETCODE_INVALID", f"Pending order {ticket} does not exist"
            )
        request, shown = self._request(Action=TA_DEALER_ORD_REMOVE, Login=login, Order=int(ticket), Comment=tag)
        sent, answer = self.conn.dealer_send(request, tag)
        if not sent:
            return self._refused(*self.conn.last_error, shown)
        if answer is not None:
            return self._answered(answer, shown, 0)
        if ticket not in {int(o.Order) for o in self.conn.records("OrderRequestOpen", login)}:
            return TradeResult(
                DONE, c.TRADE_RETCODE_DONE, "TRADE_RETCODE_DONE",
                f"dealer answer lost; reconciled: order {ticket} is no longer live", order=ticket, request=shown,
            )  # fmt: skip
        return self._lost(shown, 0, f"{self.conn.answer_timeout:g} s")

    # --- reconciliation by tag ----------------------------------------------------------------------------
    def deals_by_tag(self, login: int, server: str, *, tag: str, since: datetime) -> tuple[Deal, ...]:
        digits = self._digits(login)
        start, end = self._window(since)
        raw = self.conn.records("DealRequest", login, start, end)
        return tuple(self._deal(d, digits) for d in raw if str(d.Comment) == tag and self._magic_ok(d))

    def orders_by_tag(self, login: int, server: str, *, tag: str, since: datetime) -> tuple[PendingOrder, ...]:
        start, end = self._window(since)
        with self.conn.lock:
            live = self.conn.records("OrderRequestOpen", login)
            history = self.conn.records("HistoryRequest", login, start, end)
        return tuple(self._order(o) for o in (*live, *history) if str(o.Comment) == tag and self._magic_ok(o))

    def positions_by_tag(self, login: int, server: str, *, tag: str) -> tuple[Position, ...]:
        digits = self._digits(login)
        raw = [p for p in self.conn.records("PositionRequest", login) if str(p.Comment) == tag]
        self._load_entry_costs([p for p in raw if int(p.Position) not in self._entry_costs])
        return tuple(self._position(p, digits, self._commission(p, digits)) for p in raw)

    def _digits(self, login: int) -> int:
        account = self.conn.record("UserAccountRequest", login)
        if account is None:
            raise GatewayUnavailable(f"account {login} is not on this manager's server")
        return int(account.CurrencyDigits)

    # --- server-side rights ---------------------------------------------------------------------------------
    def set_server_trade_disabled(self, login: int, server: str, *, disabled: bool) -> bool | None:
        """Set (or clear) the user's USER_RIGHT_TRADE_DISABLED on the server, from its current
        rights as the server has them (a round trip, not the pumped copy)."""
        with self.conn.lock:
            user = self.conn.record("UserRequest", login)
            if user is None:
                raise GatewayUnavailable(f"account {login} is not on this manager's server")
            rights = int(user.Rights)
            wanted = rights | USER_RIGHT_TRADE_DISABLED if disabled else rights & ~USER_RIGHT_TRADE_DISABLED
            if wanted == rights:
                return True
            user.Rights = wanted
            if not self.conn.call("UserUpdate", user):
                code, text = self.conn.error()
                raise GatewayUnavailable(f"Manager API UserUpdate of {login} failed: ({code}) {text}", code=code)
        return True

    def server_trade_disabled(self, login: int, server: str) -> bool | None:
        user = self.conn.record("UserRequest", login)
        return None if user is None else bool(int(user.Rights) & USER_RIGHT_TRADE_DISABLED)

    # --- health ---------------------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        base = {"backend": self.backend, "manager_server": self.conn.server, "manager_login": self.conn.login}
        if not self.conn.connected:
            # The dispatcher (or the next call) is connecting: health never waits for Connect.
            code, text = self.conn.last_error
            return {**base, "available": False, "detail": f"not connected to {self.conn.server}: ({code}) {text}"}
        try:
            started = time.monotonic()
            with self.conn.lock:
                server_time = self.conn.call("TimeServer")
            if not server_time:
                code, text = self.conn.error()
                return {**base, "available": False, "detail": f"TimeServer failed: ({code}) {text}"}
        except GatewayUnavailable as exc:
            return {**base, "available": False, "detail": exc.message}
        except Exception as exc:  # health must answer, whatever the binding did
            return {**base, "available": False, "detail": f"{type(exc).__name__}: {exc}"}
        return {
            **base,
            "available": True,
            "detail": f"Manager API connected to {self.conn.server} (groups {self.groups})",
            "round_trip_ms": round((time.monotonic() - started) * 1000, 1),
            "reconnects": self.conn.drops,
            "trade_allowed": True,
        }


def _by_login(records: list[Any], logins: list[int]) -> dict[int, list[Any]]:
    """The records (positions, orders) of each login, every login present."""
    out: dict[int, list[Any]] = {login: [] for login in logins}
    for record in records:
        out.setdefault(int(record.Login), []).append(record)
    return out
