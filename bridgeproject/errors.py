"""The one application error type, and the one handler that turns every error into RFC 9457 JSON."""

from __future__ import annotations

import logging
from typing import Any

from django import db
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from rest_framework import exceptions as drf
from rest_framework.response import Response

from bridgeproject import context

logger = logging.getLogger("bridge.errors")

PROBLEM_CONTENT_TYPE = "application/problem+json"

_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


# Every problem `code` the API sends, with its status and when (the OpenAPI document lists them;
# tests/test_openapi.py holds this table equal to the codes the code raises).
PROBLEM_CODES: dict[str, tuple[int, str]] = {
    "malformed_json": (400, "The body is not strict JSON (NaN, Infinity, too deep, NUL or lone surrogate)."),
    "duplicate_json_key": (400, "An object of the body holds a key twice."),
    "idempotency_key_required": (400, "No idempotency key from any source."),
    "idempotency_key_mismatch": (400, "X-Idempotency-Key and meta.idempotency_key differ."),
    "invalid_idempotency_key": (400, "The key is not 1–255 printable ASCII characters."),
    "unsupported_protocol_version": (400, "X-Protocol-Version names another major version."),
    "tenant_required": (400, "A token scoped to several tenants sent a GET without X-Tenant-ID."),
    "invalid_cursor": (400, "The cursor is not one this API gave."),
    "authentication_failed": (401, "Missing, malformed, unknown or revoked token (WWW-Authenticate: Bearer)."),
    "tenant_forbidden": (403, "The tenant, account or command belongs to another tenant or is outside the token."),
    "forbidden": (403, "Anything else the caller may not do (outside the API: a page of the panel)."),
    "not_found": (404, "No such route or resource."),
    "command_not_found": (404, "No command with this id for the tenant."),
    "account_not_found": (404, "The account is not registered (a first policy snapshot registers it)."),
    "method_not_allowed": (405, "The method is not allowed on this path."),
    "duplicate_command_id": (409, "The command_id was already used under another idempotency key."),
    "request_in_progress": (
        409,
        "Reserved by PROTOCOL §6; this bridge never sends it: a retry that arrives while the first request"
        " is processed waits for it and replays its answer.",
    ),
    "stale_policy_version": (409, "policy_version is older than the account's current version; nothing changed."),
    "policy_version_conflict": (409, "The same policy_version is held with another payload."),
    "ambiguous_account": (
        409,
        "The caller has this login on several servers: name one (?server= or actor.server); `servers` lists them.",
    ),
    "payload_too_large": (413, "The body is over 256 KiB."),
    "unsupported_media_type": (415, "The body is not Content-Type: application/json."),
    "validation_failed": (422, "Fields are missing or invalid: one `errors` entry per field."),
    "idempotency_key_reused": (422, "The idempotency key was used with another body."),
    "reserved_command_id": (422, "command_id starts with the reserved prefix `bridge-`."),
    "rate_limited": (429, "Too many failed authentications from this client (Retry-After)."),
    "internal_error": (500, "A bug of the bridge; it is logged under the correlation id."),
    "mt5_unavailable": (503, "The MT5 terminal cannot be reached; `last_known_snapshot` and its age are given."),
    "database_unavailable": (503, "The database is unavailable for a moment; retry with the same key (Retry-After)."),
}


def problem_codes_of(status: int) -> list[str]:
    return [code for code, (code_status, _) in PROBLEM_CODES.items() if code_status == status]


class BridgeError(Exception):
    """An error the client is told about: a status, a stable snake_case code and a sentence."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        errors: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.errors = errors or []
        self.headers = headers or {}
        self.extra = extra or {}

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": f"https://bridge.invalid/problems/{self.code.replace('_', '-')}",
            "title": _TITLES.get(self.status, "Error"),
            "status": self.status,
            "detail": self.detail,
            "code": self.code,
            "correlation_id": context.current().get("correlation_id"),
            "errors": self.errors,
        }
        body.update(self.extra)
        return body


def validation_error(errors: list[dict[str, str]], detail: str = "The request has invalid fields.") -> BridgeError:
    return BridgeError(422, "validation_failed", detail, errors=errors)


def flatten_errors(detail: Any, prefix: str = "") -> list[dict[str, str]]:
    """DRF's nested error dict as one {field, message} entry per bad field, fields dotted."""
    out: list[dict[str, str]] = []
    if isinstance(detail, dict):
        for key, value in detail.items():
            if key == "non_field_errors":
                name = prefix
            elif isinstance(key, int):
                name = f"{prefix}[{key}]"
            else:
                name = f"{prefix}.{key}" if prefix else str(key)
            out.extend(flatten_errors(value, name))
    elif isinstance(detail, list):
        if all(not isinstance(item, dict | list) for item in detail):
            out.extend({"field": prefix or "body", "message": str(item)} for item in detail)
        else:
            for index, item in enumerate(detail):
                out.extend(flatten_errors(item, f"{prefix}[{index}]"))
    else:
        out.append({"field": prefix or "body", "message": str(detail)})
    return out


def _from_drf(exc: drf.APIException) -> BridgeError:
    if isinstance(exc, drf.ValidationError):
        return validation_error(flatten_errors(exc.detail))
    if isinstance(exc, drf.NotAuthenticated | drf.AuthenticationFailed):
        return BridgeError(
            401,
            "authentication_failed",
            str(exc.detail),
            headers={"WWW-Authenticate": 'Bearer realm="mt5-bridge"'},
        )
    if isinstance(exc, drf.PermissionDenied):
        return BridgeError(403, "tenant_forbidden", str(exc.detail))
    if isinstance(exc, drf.UnsupportedMediaType):
        return BridgeError(415, "unsupported_media_type", "Send the body as Content-Type: application/json.")
    if isinstance(exc, drf.ParseError):
        return BridgeError(400, "malformed_json", str(exc.detail))
    if isinstance(exc, drf.MethodNotAllowed):
        return BridgeError(405, "method_not_allowed", str(exc.detail))
    if isinstance(exc, drf.NotFound):
        return BridgeError(404, "not_found", str(exc.detail))
    if isinstance(exc, drf.Throttled):
        wait = int(exc.wait or 1)  # type: ignore[attr-defined]  # set by Throttled.__init__, absent from djangorestframework-stubs
        return BridgeError(429, "rate_limited", str(exc.detail), headers={"Retry-After": str(wait)})
    return BridgeError(exc.status_code, exc.default_code, str(exc.detail))


def to_bridge_error(exc: Exception) -> BridgeError | None:
    if isinstance(exc, BridgeError):
        return exc
    if isinstance(exc, db.OperationalError | db.InterfaceError):
        # The database is restarting or unreachable: nothing was done, and a retry with the same
        # idempotency key is safe. A 503 says so; a 500 said "our bug" (drills/faults.py pg_restart).
        logger.warning("database unavailable", exc_info=exc)
        return BridgeError(
            503,
            "database_unavailable",
            "The bridge's database is unavailable for a moment; retry with the same idempotency key.",
            headers={"Retry-After": "1"},
        )
    if isinstance(exc, drf.APIException):
        return _from_drf(exc)
    if isinstance(exc, Http404):
        return BridgeError(404, "not_found", "No such resource.")
    return None


def problem_exception_handler(exc: Exception, ctx: dict[str, Any]) -> Response | None:
    """DRF's EXCEPTION_HANDLER: every error the API raises leaves as problem JSON."""
    error = to_bridge_error(exc)
    if error is None:
        logger.exception("unhandled error", exc_info=exc)
        error = BridgeError(500, "internal_error", "The bridge failed to process the request; it is logged.")
    response = Response(error.body(), status=error.status, headers=error.headers, content_type=PROBLEM_CONTENT_TYPE)
    return response


def problem_response(error: BridgeError) -> HttpResponse:
    """The same body for errors raised outside DRF (middleware, Django's 404/500 handlers)."""
    response = JsonResponse(error.body(), status=error.status, content_type=PROBLEM_CONTENT_TYPE)
    for name, value in error.headers.items():
        response[name] = value
    return response


def handler404(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return problem_response(BridgeError(404, "not_found", f"No route for {request.path}."))


def handler403(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return problem_response(BridgeError(403, "forbidden", "You may not do this."))


def handler500(request: HttpRequest) -> HttpResponse:
    return problem_response(
        BridgeError(500, "internal_error", "The bridge failed to process the request; it is logged.")
    )


def document_problem_content_type(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: problem responses are documented with the media type they
    are sent with (`application/problem+json`), not the renderer's `application/json`."""
    for operations in result.get("paths", {}).values():
        for operation in operations.values():
            if not isinstance(operation, dict):
                continue
            for response in operation.get("responses", {}).values():
                content = response.get("content") if isinstance(response, dict) else None
                if not isinstance(content, dict):
                    continue
                media = content.get("application/json")
                if media and media.get("schema", {}).get("$ref", "").endswith("/Problem"):
                    content[PROBLEM_CONTENT_TYPE] = content.pop("application/json")
    return result
