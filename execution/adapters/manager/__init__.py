"""The MT5 Manager API backend (``MT5_BACKEND=manager``): every account of a server through one
manager connection (MANAGER_API.md).

``connection`` keeps the connection up (pumping, sinks, dealer answers, reconnect and resync),
``gateway`` is the Gateway over it, and ``verify`` holds every fact about the binding that must
be checked on a broker's demo server before production (``docs/manager-api.md``).

``MT5_MANAGER_SERVER`` is ``host:port`` for a real server, reached through the Windows-only
``MT5Manager`` package, or ``simulator`` (``simulator:NAME``) for the simulator's Manager
surface over the same state as the simulated terminals; left empty, it is the simulator
where ``MT5Manager`` cannot be imported.
"""

from __future__ import annotations

import logging
from typing import Any

from execution.adapters.manager.connection import ManagerConnection
from execution.adapters.manager.gateway import ManagerGateway
from execution.adapters.unavailable import UnavailableGateway
from execution.gateway import Gateway, GatewayUnavailable

__all__ = ["ManagerConnection", "ManagerGateway", "build_manager_gateway", "manager_module"]

log = logging.getLogger(__name__)


def _mt5manager() -> Any:
    import MT5Manager  # Windows-only optional dependency

    return MT5Manager


def manager_module(server: str) -> tuple[str, Any]:
    """(server, module) for ``MT5_MANAGER_SERVER``; raises GatewayUnavailable with the reason."""
    if not server:
        try:
            return server, _mt5manager()
        except ImportError:
            server = "simulator"
    if server == "simulator" or server.startswith("simulator:"):
        from execution.simulator import manager as simulated

        return server, simulated
    try:
        return server, _mt5manager()
    except ImportError as exc:
        raise GatewayUnavailable(
            f"MT5 Manager API backend: MT5_MANAGER_SERVER={server} needs the MT5Manager package (Windows): {exc}"
        ) from exc


def _tend_thread_connection() -> None:
    """After an event on the dispatcher thread: its database connection stays open (the next
    breach's note must not wait for a connect, ~10 ms, nor for PostgreSQL to load the tables'
    catalog entries again), unless a database error left it unusable; then it closes, and the
    next use connects again. Never raises (the dispatcher goes on)."""
    from django.db import DatabaseError, connection

    if connection.connection is None or not connection.errors_occurred:
        return
    try:
        if connection.is_usable():
            connection.errors_occurred = False
            return
        connection.close()
    except DatabaseError:
        log.warning("manager dispatcher: closing its broken database connection failed", exc_info=True)


def _close_thread_connection() -> None:
    from django.db import connection

    connection.close()


def build_manager_gateway(*, server: str, login: int, password: str, groups: str) -> Gateway:
    """The manager gateway, connecting in the background; unavailable (saying why) when it cannot be built."""
    try:
        server, module = manager_module(server)
    except GatewayUnavailable as exc:
        return UnavailableGateway("manager", exc.message, details={"manager_server": server})
    if not server:
        return UnavailableGateway("manager", "MT5 Manager API backend: MT5_MANAGER_SERVER (host:port) is not set")
    if not login:
        return UnavailableGateway(
            "manager", "MT5 Manager API backend: MT5_MANAGER_LOGIN is not set", details={"manager_server": server}
        )
    connection = ManagerConnection(
        module,
        server=server,
        login=login,
        password=password,
        tend=_tend_thread_connection,
        after_work=_close_thread_connection,
    )
    gateway = ManagerGateway(connection, groups=groups or "*")
    try:
        connection.start()
    except GatewayUnavailable:
        pass  # every call connects again first; health says why meanwhile
    return gateway
