"""Trading disabled on the MT5 server itself, where the backend can (RISK_RULES.md "Enforcement
that holds": the Manager API's ``USER_RIGHT_TRADE_DISABLED``, so the trader's own terminal is
refused too).

The bridge wants an account's trading disabled on the server while its ``disable_trading``
command holds (``trading_enabled`` off) or a breach blocks it (``rules.open_position_block``
says ``trading_disabled``: a hard breach, or a daily one until the next trading day). After each
monitor read, ``server_trading_sync`` compares that with what the snapshot shows the server has
(``AccountSnapshot.trade_allowed`` is the user's right on this backend) and sets or clears the
right where they differ. It clears only what the bridge set (``server_trade_disabled``): a right
an administrator took away stays taken. A server that cannot be reached is tried again on the
next read. Terminal backends have no such right: this does nothing for them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from django.utils import timezone

from execution.gateway import AccountSnapshot, Gateway, GatewayUnavailable
from policies.models import TradingAccount
from risk import rules, sql

if TYPE_CHECKING:
    from risk.engine import WatchedAccount

logger = logging.getLogger("bridge.risk")


def _wanted_disabled(row: sql.RiskRow | None, policy: rules.Policy, now: datetime) -> bool:
    if row is None or row.state.policy_version != policy.policy_version:
        return False
    return rules.open_position_block(policy, row.state, now) == "trading_disabled"


def server_trading_sync(
    *,
    gateway: Gateway,
    accounts: Sequence[WatchedAccount],
    snapshots: Mapping[tuple[int, str], AccountSnapshot | Exception],
    now: datetime | None = None,
) -> int:
    """Set or clear the accounts' trade right on the server where the bridge's wish and the server
    differ; returns how many were changed."""
    if not gateway.server_side_trading:
        return 0
    now = now or timezone.now()
    pks = [a.pk for a in accounts]
    flags = {
        pk: (enabled, bridge_set)
        for pk, enabled, bridge_set in sql.any_of(TradingAccount.objects.all(), "id", pks).values_list(
            "pk", "trading_enabled", "server_trade_disabled"
        )
    }
    rows = sql.risk_rows(pks)
    changed = 0
    for account in accounts:
        pk, login, server = account.pk, account.login, account.server
        mt5 = snapshots.get((login, server))
        if mt5 is None or isinstance(mt5, Exception) or pk not in flags:
            continue
        enabled, bridge_set = flags[pk]
        wanted = not enabled or _wanted_disabled(rows.get(pk), account.policy, now)
        on_server = not mt5.trade_allowed
        if wanted == on_server and wanted == bridge_set:
            continue
        if wanted and on_server:
            continue  # disabled by someone else: leave it theirs
        if not wanted and on_server and not bridge_set:
            continue  # an administrator's: never cleared by the bridge
        try:
            if wanted != on_server:
                gateway.set_server_trade_disabled(login, server, disabled=wanted)
        except GatewayUnavailable as exc:
            logger.warning("server-side trading not changed", extra={"account": login, "error": exc.message})
            continue
        TradingAccount.objects.filter(pk=pk).update(server_trade_disabled=wanted)
        logger.warning("server-side trading " + ("disabled" if wanted else "enabled again"), extra={"account": login})
        changed += 1
    return changed
