"""``get_gateway()``: this process's MT5 gateway, chosen by ``settings.MT5_BACKEND``.

One per process. With ``official`` and ``mt5linux`` it is a ``TerminalRouter``: each call goes
to the adapter of its account's terminal (``execution.terminals``), one adapter per terminal,
built on first use; one terminal connection is one logged-in account at a time, and each
adapter's lock serialises the threads of a process. A backend or a terminal whose library is
missing here is still returned (as an unavailable gateway) so health can say why.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from django.conf import settings

from execution.adapters.manager import build_manager_gateway
from execution.adapters.official import OfficialGateway, SharedModule
from execution.adapters.router import TerminalRouter
from execution.adapters.unavailable import UnavailableGateway
from execution.gateway import Gateway, GatewayUnavailable
from execution.models import TerminalKind
from execution.terminals import TerminalConfig, configured_terminals, terminal_for, terminal_named, terminals_for

BACKENDS = ("simulator", "official", "mt5linux", "manager")

_lock = threading.Lock()
_gateway: Gateway | None = None


def _password_for(login: int, server: str) -> str | None:
    """Read when an account logs in: from its terminal's environment variable, never stored."""
    return terminal_for(login, server).password


class TerminalAdapters:
    """Builds each terminal's adapter for the official and mt5linux backends.

    A ``path`` terminal is reached through the process's ``MetaTrader5`` module (official) or the
    mt5linux server of ``MT5LINUX_HOST``/``MT5LINUX_PORT`` (mt5linux), an ``mt5linux`` terminal
    through the server at its own host and port. Terminals reached through one module share it,
    one attached at a time (``SharedModule``): switching costs a shutdown and an initialize.
    """

    def __init__(
        self,
        backend: str,
        *,
        magic: int,
        local_module: Callable[[], Any] | None = None,
        rpyc_factory: Callable[..., Any] | None = None,
    ) -> None:
        self.backend, self.magic = backend, magic
        self._local_module = local_module or _metatrader5
        self._rpyc_factory = rpyc_factory
        self._modules: dict[tuple[Any, ...], tuple[Any, SharedModule]] = {}

    def _module(self, config: TerminalConfig) -> tuple[str, Any, SharedModule]:
        from execution.adapters.mt5linux import Mt5LinuxModule

        if config.kind == TerminalKind.MT5LINUX:
            key: tuple[Any, ...] = ("mt5linux", config.host, config.port)
        elif self.backend == "mt5linux":
            key = ("mt5linux", getattr(settings, "MT5LINUX_HOST", "127.0.0.1"), int(settings.MT5LINUX_PORT))
        else:
            key = ("official",)
        if key not in self._modules:
            remote = key[0] == "mt5linux"
            module = Mt5LinuxModule(key[1], key[2], self._rpyc_factory) if remote else self._local_module()
            self._modules[key] = (module, SharedModule())
        module, shared = self._modules[key]
        return key[0], module, shared

    def __call__(self, config: TerminalConfig) -> Gateway:
        if self.backend == "simulator":
            return self._simulated(config)
        try:
            transport, module, shared = self._module(config)
        except GatewayUnavailable as exc:
            return UnavailableGateway(self.backend, exc.message)
        return OfficialGateway(
            module,
            terminal_path=config.path or None,
            password_for=_password_for,
            magic=self.magic,
            backend=transport,
            shared=shared,
            symbols=config.symbols,
        )

    def _simulated(self, config: TerminalConfig) -> Gateway:
        """A simulated terminal, known by its path (a private one by its name): like a real one,
        every process attached to it shares its one logged-in account."""
        from execution.simulator import SimulatedMetaTrader5  # needs the app registry

        return OfficialGateway(
            SimulatedMetaTrader5(),
            terminal_path=config.path or config.name,
            password_for=_password_for,
            magic=self.magic,
            backend="simulator",
            symbols=config.symbols,
        )


def _metatrader5() -> Any:
    try:
        import MetaTrader5  # Windows-only optional dependency
    except ImportError as exc:
        raise GatewayUnavailable(f"MT5_BACKEND=official needs the MetaTrader5 package (Windows): {exc}") from exc
    return MetaTrader5


def terminal_router(backend: str, *, magic: int, **adapters: Any) -> TerminalRouter:
    """The simulator, official or mt5linux gateway: each account's calls go to the owner of its
    terminal (``execution.owners``)."""
    return TerminalRouter(
        backend,
        build=TerminalAdapters(backend, magic=magic, **adapters),
        resolve=terminal_for,
        resolve_many=terminals_for,
        configured=configured_terminals,
        named=terminal_named,
    )


def build_gateway(backend: str | None = None) -> Gateway:
    backend = (backend or getattr(settings, "MT5_BACKEND", "simulator") or "simulator").lower()
    magic = int(getattr(settings, "MT5_MAGIC", 20260529))
    if backend == "simulator":
        return terminal_router(backend, magic=magic)
    if backend in ("official", "mt5linux"):
        return terminal_router(backend, magic=magic)
    if backend == "manager":
        return build_manager_gateway(
            server=str(getattr(settings, "MT5_MANAGER_SERVER", "")),
            login=int(getattr(settings, "MT5_MANAGER_LOGIN", 0)),
            password=str(getattr(settings, "MT5_MANAGER_PASSWORD", "")),
            groups=str(getattr(settings, "MT5_MANAGER_GROUPS", "*")),
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
    """Forget (or replace, for tests) this process's gateway; the terminals it owned are let go,
    the Manager API connection it held is closed."""
    global _gateway
    with _lock:
        owners = getattr(_gateway, "owners", None)
        if owners is not None:
            owners.stop()
        connection = getattr(_gateway, "conn", None)  # the Manager API's: its pump and sinks stop
        if connection is not None and _gateway is not gateway:
            connection.close()
        _gateway = gateway
