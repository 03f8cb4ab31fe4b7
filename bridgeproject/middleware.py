"""Correlation id on every request and response; the body limit answered before anything reads it."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import TypeGuard, cast

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from bridgeproject import context
from bridgeproject.errors import BridgeError, problem_response

CORRELATION_HEADER = "X-Correlation-ID"
_MAX_CORRELATION_LENGTH = 128
_CONTROL = re.compile("[\x00-\x1f\x7f]")


def is_clean_correlation_id(raw: object) -> TypeGuard[str]:
    """Fit to travel in a header: 1–128 printable ASCII characters."""
    return isinstance(raw, str) and 0 < len(raw) <= _MAX_CORRELATION_LENGTH and raw.isprintable() and raw.isascii()


def _clean_correlation_id(raw: str | None) -> str:
    return raw if is_clean_correlation_id(raw) else str(uuid.uuid4())


class CorrelatedRequest(HttpRequest):
    """For type checking: an HttpRequest that CorrelationIdMiddleware has given its correlation id
    (Django's HttpRequest declares no such attribute). No instance is ever made of it."""

    correlation_id: str


def correlated(request: HttpRequest) -> CorrelatedRequest:
    """`request` as the middleware left it: every request it passed carries `correlation_id`."""
    return cast(CorrelatedRequest, request)


class CorrelationIdMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        correlation_id = _clean_correlation_id(request.headers.get(CORRELATION_HEADER))
        correlated(request).correlation_id = correlation_id
        with context.scope(correlation_id=correlation_id):
            response = self._guarded(request)
        # The view may adopt meta.correlation_id when the header was absent; one that cannot be a
        # header value (control characters, non-ASCII) is not echoed: that was a 500.
        adopted = correlated(request).correlation_id
        response[CORRELATION_HEADER] = adopted if is_clean_correlation_id(adopted) else correlation_id
        return response

    def _guarded(self, request: HttpRequest) -> HttpResponse:
        if _CONTROL.search(request.path_info):
            # No resource has a control character in its name, and a NUL reaching a database
            # query was a 500 (GET /api/v1/mt5/commands/%00).
            return problem_response(BridgeError(404, "not_found", "No resource has a control character in its path."))
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > settings.BRIDGE_MAX_BODY_BYTES:
            return problem_response(
                BridgeError(
                    413,
                    "payload_too_large",
                    f"The body is {length} bytes; the limit is {settings.BRIDGE_MAX_BODY_BYTES}.",
                )
            )
        return self.get_response(request)
