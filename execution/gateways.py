"""``get_gateway()``: this process's MT5 gateway, chosen by ``settings.MT5_BACKEND``.

One per process because one terminal connection is one logged-in account at a time; the
adapter's lock serialises the threads of a process. A backend whose library is missing
here is still returned (as an unavailable gateway) so health can say why.
"""

from __future__ import annotations

import threading

from django.conf import settings

from execution.adapters.manager import ManagerGateway
from execution.adapters.official import OfficialGateway
from execution.adapters.unavailable import UnavailableGateway
from execution.gateway import Gateway, GatewayUnavailable

BACKENDS = ("simulator", "official", "mt5linux", "manager")

_lock = threading.Lock()
_gateway: Gateway | None = None


def _password_for(login: int, server: str) -> str | None:
    """The configured password for the configured account; other accounts use the terminal's saved one."""
    configured_login = getattr(settings, "MT5_LOGIN", 0)
    configured_server = getattr(settings, "MT5_SERVER", "")
    if login == configured_login and (not configured_server or server == configured_server):
        return getattr(settings, "MT5_PASSWORD", "") or None
    return None


def build_gateway(backend: str | None = None) -> Gateway:
    backend = (backend or getattr(settings, "MT5_BACKEND", "simulator") or "simulator").lower()
    magic = int(getattr(settings, "MT5_MAGIC", 20260529))
    terminal_path = getattr(settings, "MT5_TERMINAL_PATH", "") or None
    if backend == "simulator":
        from execution.simulator import SimulatedMetaTrader5  # needs the app registry

        # Each process owns its simulated terminal, so nobody else can switch its account.
        return OfficialGateway(SimulatedMetaTrader5(), magic=magic, backend="simulator", verify_account=False)
    if backend == "official":
        try:
            import MetaTrader5  # Windows-only optional dependency
        except ImportError as exc:
            return UnavailableGateway(
                "official", f"MT5_BACKEND=official needs the MetaTrader5 package (Windows): {exc}"
            )
        return OfficialGateway(MetaTrader5, terminal_path=terminal_path, password_for=_password_for, magic=magic)
    if backend == "mt5linux":
        from execution.adapters.mt5linux import build_mt5linux_gateway

        try:
            return build_mt5linux_gateway(
                getattr(settings, "MT5LINUX_HOST", "127.0.0.1"),
                int(getattr(settings, "MT5LINUX_PORT", 18812)),
                magic=magic,
                terminal_path=terminal_path,
                password_for=_password_for,
            )
        except GatewayUnavailable as exc:
            return UnavailableGateway("mt5linux", exc.message)
    if backend == "manager":
        return ManagerGateway(
            server=getattr(settings, "MT5_MANAGER_SERVER", ""), login=int(getattr(settings, "MT5_MANAGER_LOGIN", 0))
        )
    return UnavailableGateway(backend, f"unknown MT5_BACKEND {backend!r}; expected one of {', '.join(BACKENDS)}")


def get_gateway() -> Gateway:
    global _gateway  # the per-process singleton
    if _gateway is None:
        with _lock:
            if _gateway is None:
                _gateway = build_gateway()
    return _gateway


def reset_gateway(gateway: Gateway | None = None) -> None:
    """Forget (or replace, for tests) this process's gateway."""
    global _gateway
    with _lock:
        _gateway = gateway
