"""The intake pipeline every POST goes through, in the order PROTOCOL.md gives its rules.

auth (401) → protocol version (400) → JSON (415/400) → idempotency key (400) → tenant (403)
→ replay (stored response) → validation (422) → processing, exactly once per key.
"""

from __future__ import annotations

from typing import Any

from rest_framework.request import Request
from rest_framework.response import Response

from bridgeproject import context
from bridgeproject.errors import BridgeError, validation_error
from bridgeproject.middleware import correlated
from commands import idempotency
from commands.models import BRIDGE_COMMAND_ID_PREFIX, IdempotencyRecord
from commands.services import command_accept
from commands.validation import validate_command_payload, validate_envelope, validate_flat, validate_policy_payload
from policies.models import TradingAccount, server_key
from policies.services import account_get_for_tenant, policy_apply, tenant_forbidden
from tenancy.auth import Principal, principal_of
from tenancy.models import Tenant

SUPPORTED_PROTOCOL_MAJOR = "1"


def check_protocol_header(request: Request) -> None:
    raw = request.headers.get("X-Protocol-Version")
    if raw is None:
        return
    major = raw.strip().partition(".")[0]
    if major != SUPPORTED_PROTOCOL_MAJOR:
        raise BridgeError(
            400, "unsupported_protocol_version", f"Protocol version {raw!r} is not supported; this bridge speaks 1."
        )


_tenants: dict[str, Tenant] = {}


def tenant_for(principal: Principal, tenant_id: Any) -> Tenant:
    """The tenant the request acts for; 403 when the token is not scoped to it."""
    if not isinstance(tenant_id, str) or not tenant_id:
        raise validation_error([{"field": "meta.tenant_id", "message": "This field is required."}])
    if not principal.may_act_for(tenant_id):
        raise tenant_forbidden(f"This token may not act for tenant {tenant_id!r}.")
    tenant = _tenants.get(tenant_id)
    if tenant is None:
        # A tenant named only by PYTHON_INGEST_TENANTS gets its row on first use.
        tenant, _ = Tenant.objects.get_or_create(tenant_id=tenant_id)
        _tenants[tenant_id] = tenant
    return tenant


def read_tenant(request: Request) -> Tenant:
    """The tenant of a GET: the token's only tenant, or X-Tenant-ID for a multi-tenant token."""
    principal = principal_of(request)
    wanted = request.headers.get("X-Tenant-ID")
    if not wanted:  # absent or empty
        if len(principal.tenant_ids) != 1:
            raise BridgeError(400, "tenant_required", "This token is scoped to several tenants: send X-Tenant-ID.")
        (wanted,) = principal.tenant_ids
    return tenant_for(principal, wanted)


# An account never changes tenant once registered, so a found (tenant, login, server) stays true.
_accounts: dict[tuple[int, int, str | None], TradingAccount] = {}


def _account_for_command(tenant: Tenant, login: int, server: str | None) -> TradingAccount:
    if server is None:
        # The flat body names no server: the tenant may register the login on another server
        # later, which makes it ambiguous (409), so this answer is never remembered.
        return account_get_for_tenant(tenant=tenant, login=login)
    cache_key = (tenant.pk, login, server_key(server))
    account = _accounts.get(cache_key)
    if account is None:
        account = account_get_for_tenant(tenant=tenant, login=login, server=server)
        if len(_accounts) > 100_000:
            _accounts.clear()
        _accounts[cache_key] = account
    return account


def _accept_command(
    tenant: Tenant,
    login: int,
    server: str | None,
    command_fields: dict[str, Any],
    body: dict[str, Any],
    record: IdempotencyRecord,
) -> tuple[int, dict[str, Any]]:
    account = _account_for_command(tenant, login, server)
    context.bind(account=login)
    common, specific = validate_command_payload(command_fields)
    context.bind(command_id=common["command_id"])
    if common["command_id"].lower().startswith(BRIDGE_COMMAND_ID_PREFIX):
        raise BridgeError(
            422,
            "reserved_command_id",
            f"command_id may not start with {BRIDGE_COMMAND_ID_PREFIX!r}: the bridge names its own commands so.",
        )
    return command_accept(
        tenant=tenant,
        account=account,
        common=common,
        specific=specific,
        envelope=body,
        correlation_id=context.current().get("correlation_id", ""),
        record=record,
    )


def _apply_policy(
    tenant: Tenant, envelope: dict[str, Any], body: dict[str, Any], key: str
) -> tuple[int, dict[str, Any]]:
    payload = validate_policy_payload(envelope["payload"])
    actor = envelope["actor"]
    context.bind(account=actor["account_login"])
    result = policy_apply(
        tenant=tenant,
        actor=actor,
        payload=payload,
        envelope=body,
        correlation_id=context.current().get("correlation_id", ""),
        idempotency_key=key,
    )
    return 200, {
        "status": result.status,
        "account_login": result.account.login,
        "policy_version": result.snapshot.policy_version,
    }


def handle_post(request: Request, *, request_types: frozenset[str], allow_flat: bool) -> Response:
    """Run one inbound POST through the whole pipeline and answer it."""
    check_protocol_header(request)
    body = request.data
    if not isinstance(body, dict):
        raise validation_error([{"field": "body", "message": "The body must be a JSON object."}])
    flat = allow_flat and "meta" not in body and "command_id" in body
    key = idempotency.resolve_key(header=request.headers.get("X-Idempotency-Key"), body=body, legacy_flat=flat)
    meta = body.get("meta")
    if not isinstance(meta, dict):
        meta = {}
    tenant = tenant_for(principal_of(request), body.get("tenant_id") if flat else meta.get("tenant_id"))
    if request.headers.get("X-Correlation-ID") is None and isinstance(meta.get("correlation_id"), str):
        correlated(request._request).correlation_id = meta["correlation_id"][:128]
    correlation_id = correlated(request._request).correlation_id
    context.bind(tenant=tenant.tenant_id, correlation_id=correlation_id, idempotency_key=key)

    fingerprint = idempotency.fingerprint(body)
    # A retry this process has seen costs nothing more; others are caught by run_once's insert.
    replay = idempotency.find_replay(tenant=tenant, key=key, fingerprint_=fingerprint)
    if replay is not None:
        return _respond(replay)

    record = idempotency.new_record(
        tenant=tenant,
        key=key,
        fingerprint_=fingerprint,
        method=request.method or "POST",
        path=request.path,
        request_type="command",
        correlation_id=correlation_id,
    )
    if flat:
        flat_fields = validate_flat(body)
        login, server = flat_fields["account_id"], None
        command_fields = {
            **flat_fields["payload"],
            "command_id": flat_fields["command_id"],
            "command_type": flat_fields["command_type"],
        }
    else:
        envelope = validate_envelope(body)
        request_type = envelope["request"]["type"]
        if request_type not in request_types:
            raise validation_error(
                [{"field": "request.type", "message": f"This endpoint takes {', '.join(sorted(request_types))}."}]
            )
        record.request_type = request_type
        if request_type != "command":
            return _respond(
                idempotency.run_once(record=record, process=lambda: _apply_policy(tenant, envelope, body, key))
            )
        login, server, command_fields = (
            envelope["actor"]["account_login"],
            envelope["actor"]["server"],
            envelope["payload"],
        )

    return _respond(
        idempotency.run_once_storing(
            record=record,
            process=lambda record: _accept_command(tenant, login, server, command_fields, body, record),
        )
    )


def _respond(outcome: idempotency.Outcome) -> Response:
    response = Response(outcome.body, status=outcome.status)
    if outcome.replayed:
        response[idempotency.REPLAY_HEADER] = "true"
    return response
