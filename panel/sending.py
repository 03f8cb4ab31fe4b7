"""Send a request from the panel through the bridge's real API path, as a principal scoped to one tenant.

The request is routed by the project's own URLconf to the same DRF view Laravel reaches, wrapped
in the same correlation middleware, and authenticated as `panel:<username>` for exactly the one
tenant the operator chose — so the intake's tenant, idempotency and validation rules all apply.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from django.urls import resolve
from rest_framework.test import APIRequestFactory, force_authenticate

from bridgeproject.middleware import CorrelationIdMiddleware
from tenancy.auth import Principal

_factory = APIRequestFactory()

# The headers a response is shown with; the rest is transport noise.
SHOWN_RESPONSE_HEADERS = ("Content-Type", "X-Correlation-ID", "Idempotent-Replayed", "WWW-Authenticate", "Retry-After")


@dataclass(frozen=True)
class ApiResult:
    method: str
    path: str
    request_headers: dict[str, str]
    request_body: Any
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def replayed(self) -> bool:
        return self.headers.get("Idempotent-Replayed") == "true"

    def as_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "request_headers": self.request_headers,
            "status": self.status,
            "headers": self.headers,
            "body": self.body,
            "replayed": self.replayed,
        }


def panel_principal(*, username: str, tenant_id: str) -> Principal:
    return Principal(token_id=None, name=f"panel:{username}", tenant_ids=frozenset({tenant_id}))


def api_call(
    *,
    username: str,
    tenant_id: str,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> ApiResult:
    """Run one API request in-process through the real view; the caller has checked the user may act for the tenant."""
    sent_headers = {"Content-Type": "application/json", "X-Protocol-Version": "1", **(headers or {})}
    meta: dict[str, Any] = {
        f"HTTP_{name.upper().replace('-', '_')}": value
        for name, value in sent_headers.items()
        if name != "Content-Type"
    }
    if method == "GET":
        request = _factory.get(path, **meta)
    else:
        request = _factory.generic(method, path, data=json.dumps(body), content_type="application/json", **meta)
    principal = panel_principal(username=username, tenant_id=tenant_id)
    force_authenticate(request, user=principal)  # type: ignore[arg-type]  # DRF takes any user object; the API's is a Principal
    match = resolve(path)
    response = CorrelationIdMiddleware(lambda req: match.func(req, *match.args, **match.kwargs))(request)
    if hasattr(response, "render"):
        response.render()
    try:
        parsed = json.loads(response.content) if response.content else None
    except ValueError:
        parsed = response.content.decode(errors="replace")[:2000]
    shown = {name: response[name] for name in SHOWN_RESPONSE_HEADERS if response.has_header(name)}
    return ApiResult(
        method=method,
        path=path,
        request_headers=sent_headers,
        request_body=body,
        status=response.status_code,
        headers=shown,
        body=parsed,
    )
