"""Every fact about ``MT5Manager`` that MANAGER_API.md marks "(verify)", in this one module.

The headers, the examples and the wheel's typed stub (``_core.pyi``) give the names; they do
not say how the Python binding behaves at run time in these points. Each is decided here,
once, in the way that fails safe, and ``docs/manager-api.md`` lists them as the checklist for
the first run on a broker's demo server. Nothing else in the adapter assumes any of them.
"""

from __future__ import annotations

from typing import Any

# 1. Thread safety. The binding's thread safety is not documented: every call on one
#    connection is serialised on one lock (``ManagerConnection.lock``), sinks included only as
#    far as they never call the API (they queue the event and return).
SERIALISE_CALLS = True

# 2. Answers to DealerSend. C++ returns the request id through an out parameter; the Python
#    binding's return value is one of: the id (int), True/False, or a result code. The id is
#    taken from an int, else from ``request.ID`` once the call returned something truthy; when
#    neither gives one, the answer is matched by its tag (the request's Comment) alone.
ANSWER_TIMEOUT_SECONDS = 10.0
# The in-flight retcodes (10001 INWAY, 10002 ACCEPTED, 10003 PROCESS): the final answer follows.
IN_FLIGHT_RETCODES = frozenset({10001, 10002, 10003})


def dealer_request_id(returned: Any, request: Any) -> int | None:
    """The id DealerSend gave ``request``; None when the call failed or gave none."""
    if returned is None or returned is False:
        return None
    if isinstance(returned, int) and not isinstance(returned, bool) and returned > 0:
        return returned
    request_id = int(getattr(request, "ID", 0) or 0)
    return request_id or None


def dealer_send_failed(returned: Any) -> bool:
    """Did DealerSend refuse to queue the request (nothing was sent)?"""
    return returned is None or returned is False


# 3. The market flag. A dealer's TA_DEALER_POS_EXECUTE fills at the given PriceOrder unless the
#    request asks for the market price: TA_FLAG_MARKET (0x2) in ``Flags``, PriceOrder 0. The
#    adapter always closes at market this way, and opens at market unless a price is given.
TA_FLAG_MARKET = 0x2

# 4. OnTick's arity. IMTTickSink has OnTick(symbol, MTTickShort) and the extended
#    OnTick(feeder, MTTick); which one the binding calls with which arguments is not documented.
#    A tick sink takes any arguments and reads them here.


def tick_of(args: tuple[Any, ...]) -> tuple[str, Any] | None:
    """(symbol, tick) from OnTick's arguments, whichever form they came in; None if unknown."""
    if len(args) == 2 and isinstance(args[0], str):
        return args[0], args[1]
    if len(args) == 2 and hasattr(args[1], "symbol"):
        return str(args[1].symbol), args[1]
    if len(args) == 1 and hasattr(args[0], "symbol"):
        return str(args[0].symbol), args[0]
    return None


# 5. Pumped equity. Whether the pumped MTAccount (Equity, Profit) and MTPosition (PriceCurrent,
#    Profit) follow every tick is not documented. Until checked, account snapshots that can
#    declare a breach are read with ``*Request*`` (one round trip, the server's values) rather
#    than ``*Get*`` (the local copy).
PUMPED_EQUITY_FOLLOWS_TICKS = False

# 6. Rollover of MTUser.BalancePrevDay / EquityPrevDay: when the server sets them relative to
#    the trading day the bridge uses. The bridge keeps its own day-start values and does not
#    read these fields.
USES_PREV_DAY_FIELDS = False

# 7. Records. The binding's records are built with the manager they belong to
#    (``MT5Manager.MTRequest(manager)``, ``MTUser(manager)``).


def new_record(module: Any, name: str, api: Any) -> Any:
    return getattr(module, name)(api)


# 8. LastError(). The stub says ``(int, EnMTAPIRetcode, str)``; the MT retcode is read from the
#    second element and the text from the third, whatever the first is.


def last_error(module: Any) -> tuple[int, str]:
    try:
        error = module.LastError()
    except Exception as exc:  # the binding itself failed
        return 2, f"LastError raised {type(exc).__name__}: {exc}"
    if isinstance(error, tuple) and len(error) >= 3:
        return int(error[1]), str(error[2])
    if isinstance(error, tuple) and len(error) == 2:
        return int(error[0]), str(error[1])
    return int(error or 0), ""


# 9. Empty and failed bulk reads. A failed read is taken to return None or False with
#    LastError set; an empty one an empty list, or None/False with MT_RET_OK / MT_RET_OK_NONE.
MT_RET_OK, MT_RET_OK_NONE = 0, 1


def listed(module: Any, value: Any) -> tuple[list[Any] | None, tuple[int, str]]:
    """A bulk read's records, or None with the error when it failed."""
    if value is None or value is False:
        code, text = last_error(module)
        if code in (MT_RET_OK, MT_RET_OK_NONE):
            return [], (code, text)
        return None, (code, text)
    if isinstance(value, list | tuple):
        return list(value), (MT_RET_OK, "")
    return [value], (MT_RET_OK, "")


# 10. Reconnection. Whether the API reconnects by itself after OnDisconnect is not documented;
#     the adapter calls Connect again itself (with backoff) and takes "already connected" as
#     connected. It never trusts its pumped copy across a drop: after each connect it resyncs
#     from ``*Request*`` reads before anything is evaluated.
RECONNECT_BACKOFF_SECONDS = (0.2, 0.5, 1.0, 2.0, 5.0)

# 11. Magic number on dealer deals. MTRequest has no ExpertID: deals a dealer makes carry the
#     request's Comment (the bridge's tag) but, presumably, ExpertID 0. Reconciliation by tag
#     matches the comment alone on this backend.
MATCH_MAGIC = False

# 12. TypeFill numbering on MTRequest: taken to be the terminal's ORDER_FILLING_* (FOK 0, IOC 1,
#     RETURN 2), chosen from MTConSymbol.FillFlags (FILL_FLAGS_FOK 1, FILL_FLAGS_IOC 2).
FILL_FOK, FILL_IOC, FILL_RETURN = 0, 1, 2


def type_fill(fill_flags: int) -> int:
    if fill_flags & 1:
        return FILL_FOK
    if fill_flags & 2:
        return FILL_IOC
    return FILL_RETURN


# 13. Connect's timeout unit (milliseconds, as in C++) and the pump modes the adapter needs.
CONNECT_TIMEOUT_MS = 30_000
PUMP_MODE_USERS = 0x1
PUMP_MODE_ORDERS = 0x8
PUMP_MODE_POSITIONS = 0x80
PUMP_MODE_GROUPS = 0x100
PUMP_MODE_SYMBOLS = 0x200
PUMP_MODE_TIME = 0x1000
PUMP_MODE = (
    PUMP_MODE_USERS | PUMP_MODE_ORDERS | PUMP_MODE_POSITIONS | PUMP_MODE_GROUPS | PUMP_MODE_SYMBOLS | PUMP_MODE_TIME
)
