"""The payload builder: turn a few choices into a request the API accepts, validated by the API's own request models.

`build_request` is the one place the builder page, its live preview, the catalogue's examples
and the tests build requests; `validate_request` runs the same request models, in the same order,
as commands.intake.handle_post, and reports errors in the API's own `errors` shape.
"""

from __future__ import annotations

import copy
import json
import shlex
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from django.conf import settings

from bridgeproject.errors import BridgeError
from commands import examples
from commands.intake import SUPPORTED_PROTOCOL_MAJOR
from commands.validation import validate_command_payload, validate_envelope, validate_flat, validate_policy_payload

PROTOCOL_VERSION = f"{SUPPORTED_PROTOCOL_MAJOR}.0"

# The request types the builder makes, and where each goes.
COMMAND = "command"
POLICY_SNAPSHOT = "policy_snapshot"
FLAT_COMMAND = "flat_command"
SYNC_REQUEST = "sync_request"
REQUEST_TYPES: dict[str, str] = {
    COMMAND: "Command (envelope)",
    POLICY_SNAPSHOT: "Policy snapshot (envelope)",
    FLAT_COMMAND: "Legacy flat command (PowerShell body)",
    SYNC_REQUEST: "Sync request (GET account)",
}
PATHS: dict[str, str] = {
    COMMAND: "/api/v1/mt5/commands",
    POLICY_SNAPSHOT: "/api/v1/mt5/policies",
    FLAT_COMMAND: "/api/v1/mt5/commands",
}

# Every header PROTOCOL.md §2 names, with what the builder puts in it.
REQUIRED_HEADERS: list[tuple[str, str]] = [
    ("Authorization", "Bearer <TOKEN> — PYTHON_INGEST_TOKEN or a token from the panel's API tokens"),
    ("Content-Type", "application/json"),
    ("X-Correlation-ID", "<uuid> — echoed on the response, carried into logs, tasks and callbacks"),
    ("X-Idempotency-Key", "<uuid> — equal to meta.idempotency_key when both are sent"),
    ("X-Protocol-Version", SUPPORTED_PROTOCOL_MAJOR),
]

# Valid type-specific fields for each command type (commands/examples.py, also the OpenAPI examples).
SAMPLE_COMMAND_FIELDS: dict[str, dict[str, Any]] = examples.COMMAND_FIELDS
SAMPLE_POLICY_FIELDS: dict[str, Any] = copy.deepcopy(examples.POLICY_SNAPSHOT["payload"])
SAMPLE_ACCOUNT: dict[str, Any] = dict(examples.CLOSE_POSITIONS["actor"])


def utc_now_iso() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def new_command_id(prefix: str = "cmd") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@dataclass
class BuiltRequest:
    request_type: str
    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any] | None
    ids: dict[str, str]
    errors: list[dict[str, str]] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not self.errors

    def body_json(self) -> str:
        return json.dumps(self.body, indent=2, ensure_ascii=False) if self.body is not None else ""

    def curl(self, base_url: str | None = None) -> str:
        return curl_snippet(self, base_url or settings.PYTHON_BRIDGE_URL)

    def powershell(self, base_url: str | None = None) -> str:
        return powershell_snippet(self, base_url or settings.PYTHON_BRIDGE_URL)

    def as_dict(self) -> dict[str, Any]:
        return {
            "request_type": self.request_type,
            "method": self.method,
            "path": self.path,
            "headers": self.headers,
            "body": self.body,
            "ids": self.ids,
            "errors": self.errors,
            "valid": self.valid,
            "curl": self.curl(),
            "powershell": self.powershell(),
        }


def _ids(given: dict[str, Any] | None) -> dict[str, str]:
    """The request's identifiers: the ones the page already holds, fresh UUIDs for the rest."""
    given = {k: str(v) for k, v in (given or {}).items() if isinstance(v, str | int) and str(v).strip()}
    return {
        "request_id": given.get("request_id") or str(uuid.uuid4()),
        "correlation_id": given.get("correlation_id") or str(uuid.uuid4()),
        "idempotency_key": given.get("idempotency_key") or str(uuid.uuid4()),
        "command_id": given.get("command_id") or new_command_id(),
    }


def build_request(
    *,
    request_type: str,
    tenant_id: str,
    account: dict[str, Any],
    command_type: str | None = None,
    fields: dict[str, Any] | None = None,
    ids: dict[str, Any] | None = None,
    context: dict[str, Any] | None = None,
    environment: str | None = None,
) -> BuiltRequest:
    """Build (and validate) one request. `fields` are the type-specific payload keys, as JSON values."""
    if request_type not in REQUEST_TYPES:
        raise ValueError(f"unknown request type {request_type!r}")
    ids_ = _ids(ids)
    fields = copy.deepcopy(fields or {})
    login = account.get("account_login")
    headers = {
        "Authorization": "Bearer <TOKEN>",
        "Content-Type": "application/json",
        "X-Correlation-ID": ids_["correlation_id"],
        "X-Idempotency-Key": ids_["idempotency_key"],
        "X-Protocol-Version": SUPPORTED_PROTOCOL_MAJOR,
    }
    if request_type == SYNC_REQUEST:
        del headers["Content-Type"], headers["X-Idempotency-Key"]
        built = BuiltRequest(request_type, "GET", f"/api/v1/mt5/accounts/{login}", headers, None, ids_)
        if not isinstance(login, int) or isinstance(login, bool) or login < 1:
            built.errors.append({"field": "account_login", "message": "A positive integer is required."})
        return built

    body: dict[str, Any]
    if request_type == FLAT_COMMAND:
        # The PowerShell quick test sends no idempotency header: its key is the command_id.
        del headers["X-Idempotency-Key"]
        ids_["idempotency_key"] = ids_["command_id"]
        body = {
            "command_id": ids_["command_id"],
            "tenant_id": tenant_id,
            "account_id": login,
            "command_type": command_type,
            "payload": fields,
            "issued_at": utc_now_iso(),
        }
    else:
        payload = (
            {"command_id": ids_["command_id"], "command_type": command_type, **fields}
            if request_type == COMMAND
            else fields
        )
        default_context = {"session_id": "panel", "correlation_group": "panel-builder"}
        body = {
            "meta": {
                "protocol_version": PROTOCOL_VERSION,
                "request_id": ids_["request_id"],
                "correlation_id": ids_["correlation_id"],
                "idempotency_key": ids_["idempotency_key"],
                "tenant_id": tenant_id,
                "environment": environment or settings.BRIDGE_ENVIRONMENT,
                "source": "laravel",
                "sent_at_utc": utc_now_iso(),
            },
            "actor": {
                "trading_account_id": str(account.get("trading_account_id") or ""),
                "account_login": login,
                "server": account.get("server") or "",
                "platform": "MT5",
            },
            "context": {**default_context, **{k: v for k, v in (context or {}).items() if v not in (None, "")}},
            "request": {"type": request_type, "version": "1"},
            "payload": payload,
        }
    built = BuiltRequest(request_type, "POST", PATHS[request_type], headers, body, ids_)
    built.errors = validate_request(request_type, body)
    return built


def validate_request(request_type: str, body: Any) -> list[dict[str, str]]:
    """The API's validation of a body, without processing it: [] when the intake would accept its shape."""
    try:
        if request_type == FLAT_COMMAND:
            flat = validate_flat(body)
            validate_command_payload(
                {**flat["payload"], "command_id": flat["command_id"], "command_type": flat["command_type"]}
            )
        else:
            envelope = validate_envelope(body)
            if envelope["request"]["type"] != request_type:
                return [{"field": "request.type", "message": f"The builder made a {request_type} request."}]
            if request_type == COMMAND:
                validate_command_payload(envelope["payload"])
            else:
                validate_policy_payload(envelope["payload"])
    except BridgeError as exc:
        return exc.errors
    return []


def sample_fields(request_type: str, command_type: str | None) -> dict[str, Any]:
    if request_type == POLICY_SNAPSHOT:
        return copy.deepcopy(SAMPLE_POLICY_FIELDS)
    if request_type in (COMMAND, FLAT_COMMAND) and command_type:
        return copy.deepcopy(SAMPLE_COMMAND_FIELDS.get(command_type, {}))
    return {}


# --- Snippets ---------------------------------------------------------------------------------


def curl_snippet(built: BuiltRequest, base_url: str) -> str:
    """A bash snippet: the URL from PYTHON_BRIDGE_URL, the token from PYTHON_INGEST_TOKEN, every header."""
    lines = [
        f'PYTHON_BRIDGE_URL="${{PYTHON_BRIDGE_URL:-{base_url}}}"',
        f'curl -sS -i -X {built.method} "$PYTHON_BRIDGE_URL{built.path}" \\',
        '  -H "Authorization: Bearer ${PYTHON_INGEST_TOKEN:?set PYTHON_INGEST_TOKEN}"',
    ]
    for name, value in built.headers.items():
        if name != "Authorization":
            lines[-1] += " \\"
            lines.append(f"  -H {shlex.quote(f'{name}: {value}')}")
    if built.body is not None:
        lines[-1] += " \\"
        lines.append("  --data-binary @- <<'JSON'")
        lines.append(built.body_json())
        lines.append("JSON")
    return "\n".join(lines)


def _ps_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def powershell_snippet(built: BuiltRequest, base_url: str) -> str:
    """Invoke-RestMethod, as the panel's PowerShell quick tests, with every header and PYTHON_BRIDGE_URL."""
    headers = ['    Authorization = "Bearer $env:PYTHON_INGEST_TOKEN"']
    headers += [
        f"    {_ps_string(name)} = {_ps_string(value)}"
        for name, value in built.headers.items()
        if name not in ("Authorization", "Content-Type")
    ]
    lines = [
        f"$bridge = if ($env:PYTHON_BRIDGE_URL) {{ $env:PYTHON_BRIDGE_URL }} else {{ {_ps_string(base_url)} }}",
        "$headers = @{",
        *headers,
        "}",
    ]
    method = "Post" if built.method == "POST" else "Get"
    call = f'Invoke-RestMethod -Uri "$bridge{built.path}" `\n  -Method {method} `\n  -Headers $headers'
    if built.body is not None:
        lines += ["$body = @'", built.body_json(), "'@"]
        call += ' `\n  -ContentType "application/json" `\n  -Body $body'
    lines.append(call)
    return "\n".join(lines)
