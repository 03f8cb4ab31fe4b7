"""The MT5 Manager API seam.

The Manager API is a Windows C++/.NET SDK licensed to brokers; this build has no binding for
it. The backend can be selected and configured (so deployments and health checks are wired
end to end), but every call raises ``GatewayUnavailable`` and ``status()`` reports
``available: False``: it never pretends to have traded.
"""

from __future__ import annotations

from execution.adapters.unavailable import UnavailableGateway

REASON = (
    "MT5 Manager API backend is not available in this build: no Manager API binding is installed; "
    "use MT5_BACKEND=official (Windows terminal) or mt5linux"
)


class ManagerGateway(UnavailableGateway):
    def __init__(self, *, server: str = "", login: int = 0) -> None:
        # Configuration is kept (and shown by status) so operators see what would be used.
        super().__init__("manager", REASON, details={"manager_server": server, "manager_login": login or None})
