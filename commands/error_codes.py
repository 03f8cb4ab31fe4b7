"""Every `error_code` a command can end with: the stable codes of `command_result` callbacks and of
GET /mt5/commands/{command_id} (PROTOCOL §9 "Numbers"), listed in the OpenAPI document.

tests/test_openapi.py holds this table equal to the codes the executors and the runner set."""

from __future__ import annotations

COMMAND_ERROR_CODES: dict[str, str] = {
    "trading_disabled": "rejected: trading is disabled on the account (disable_trading, or a risk breach).",
    "account_not_active": "rejected: the account's policy says account_status is not active.",
    "unknown_symbol": "rejected: the symbol is not traded on the account's server; nothing was sent.",
    "slippage_exceeded": "rejected: the quote is further from open_price than max_slippage_points"
    " (20 when absent); nothing was sent.",
    "netting_opposite_position": "rejected: on a netting account the order would reduce, close or reverse the"
    " symbol's position; close it with close_position.",
    "position_not_found": "rejected: no open position has this ticket.",
    "invalid_volume": "rejected: a partial close asks for more lots than the position holds.",
    "expired": "expired: past expires_at_utc, or a normal command older than the TTL when picked up.",
    "mt5_unavailable": "failed: the MT5 terminal could not be reached until the command's deadline.",
    "close_failed": "failed or partially_succeeded: some positions of close_positions stayed open"
    " (error_message names each with MT5's answer).",
    "cancel_failed": "failed or partially_succeeded: some pending orders of cancel_orders stayed (error_message"
    " names each).",
}

# MT5 refused the request: the code is MT5's own TRADE_RETCODE_* name, lowercased
# (trade_retcode_no_money, trade_retcode_market_closed, trade_retcode_requote, ...).
MT5_RETCODE_PREFIX = "trade_retcode_"


def describe_command_error_codes() -> str:
    """The table as Markdown, for the OpenAPI document."""
    rows = [f"- `{code}`: {meaning}" for code, meaning in COMMAND_ERROR_CODES.items()]
    rows.append(
        f"- `{MT5_RETCODE_PREFIX}<name>`: failed: MT5 refused the request; the rest is MT5's TRADE_RETCODE_* name,"
        " lowercased (trade_retcode_no_money, trade_retcode_market_closed, ...)."
    )
    return "\n".join(rows)
