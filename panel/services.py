"""The panel's writes: send and replay through the real API path, cancel a command, re-send a callback, use a
kill switch.

Each is keyword-only, checks the user's tenant scope itself (a view forgetting to is not a leak),
and records what it did.
"""

from __future__ import annotations

import copy
import logging
import uuid
from datetime import UTC, datetime
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db import transaction

from commands.models import Command
from commands.states import State, can_transition
from panel.models import KillSwitchUse, LibraryPayload, PanelSend
from panel.navigation import environment_label
from panel.payloads import new_command_id, utc_now_iso
from panel.scoping import may_see_tenant
from panel.sending import ApiResult, api_call
from policies.models import TradingAccount, on_server
from risk.kill_switch import Switch, account_switch, tenant_switch
from tenancy.models import Tenant

logger = logging.getLogger("bridge.panel")


class PanelError(Exception):
    """A request the panel refuses, with a message for the operator."""


def _check_tenant(user: Any, tenant: Tenant) -> None:
    if not may_see_tenant(user, tenant):
        raise PermissionDenied("You may not act for this tenant.")


def _record(
    *, user: Any, tenant: Tenant, origin: str, payload: LibraryPayload | None, result: ApiResult, key: str
) -> PanelSend:
    return PanelSend.objects.create(
        tenant=tenant,
        origin=origin,
        payload=payload,
        username=user.get_username(),
        method=result.method,
        path=result.path,
        headers=result.request_headers,
        body=result.request_body,
        idempotency_key=key,
        status=result.status,
        replayed=result.replayed,
        response=result.body,
    )


def panel_send(
    *, user: Any, tenant: Tenant, method: str, path: str, body: Any, headers: dict[str, str]
) -> tuple[ApiResult, PanelSend]:
    """Send a request built in the panel (the builder) through the real API view."""
    _check_tenant(user, tenant)
    if not path.startswith("/api/v1/"):
        raise PanelError("The panel only sends to the bridge's own API.")
    result = api_call(
        username=user.get_username(), tenant_id=tenant.tenant_id, method=method, path=path, body=body, headers=headers
    )
    key = headers.get("X-Idempotency-Key") or _body_key(body)
    return result, _record(
        user=user, tenant=tenant, origin=PanelSend.Origin.BUILDER, payload=None, result=result, key=key
    )


def _body_key(body: Any) -> str:
    if not isinstance(body, dict):
        return ""
    meta = body.get("meta")
    if isinstance(meta, dict):
        return str(meta.get("idempotency_key") or "")
    return str(body.get("command_id") or "")


def _last_send(payload: LibraryPayload, tenant: Tenant) -> PanelSend | None:
    return PanelSend.objects.filter(payload=payload, tenant=tenant).order_by("-sent_at", "-id").first()


def _prepare_envelope(body: dict[str, Any], tenant: Tenant, *, fresh: bool, is_command: bool) -> dict[str, Any]:
    body = copy.deepcopy(body)
    meta = body.setdefault("meta", {})
    meta["tenant_id"] = tenant.tenant_id
    # request_id and sent_at_utc are outside the idempotency fingerprint: a client retry changes them.
    meta["request_id"] = str(uuid.uuid4())
    meta["sent_at_utc"] = utc_now_iso()
    if fresh:
        meta["correlation_id"] = str(uuid.uuid4())
        meta["idempotency_key"] = str(uuid.uuid4())
        if is_command and isinstance(body.get("payload"), dict):
            # A new key with the old command_id would be 409 duplicate_command_id: a fresh send is a new command.
            base = str(body["payload"].get("command_id") or "cmd")
            body["payload"]["command_id"] = f"{base[:200]}-{uuid.uuid4().hex[:8]}"
    return body


def _prepare_flat(body: dict[str, Any], tenant: Tenant, *, fresh: bool) -> dict[str, Any]:
    body = copy.deepcopy(body)
    body["tenant_id"] = tenant.tenant_id
    if fresh:
        # As the PowerShell quick test does with Get-Date; the suffix keeps two sends in a second apart.
        stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
        body["command_id"] = new_command_id(f"test-open-{stamp}")
        body["issued_at"] = utc_now_iso()
    return body


def payload_replay(
    *, user: Any, payload: LibraryPayload, tenant: Tenant, same_key: bool
) -> tuple[ApiResult, PanelSend]:
    """Send a library payload for `tenant`: with fresh ids and UTC timestamps, or again with the same key.

    The same key resends this tenant's last send of the payload (or the stored body when there is
    none) with only request_id and sent_at_utc renewed, so the API answers with its stored
    response and `Idempotent-Replayed: true` instead of acting twice.
    """
    _check_tenant(user, tenant)
    if payload.tenant_id is not None and payload.tenant_id != tenant.pk:
        raise PanelError("This payload belongs to another tenant.")
    kind = LibraryPayload.Kind
    last = _last_send(payload, tenant) if same_key else None
    base = last.body if last is not None and last.body is not None else payload.body
    username = user.get_username()

    if payload.kind == kind.SYNC_REQUEST:
        result = api_call(username=username, tenant_id=tenant.tenant_id, method="GET", path=payload.path)
        key = ""
    elif payload.kind == kind.PROTECTIVE_ACTION_REPORT:
        result, key = _enqueue_report(payload=payload, tenant=tenant, base=base or {}, same_key=same_key, last=last)
    elif payload.kind == kind.FLAT_COMMAND:
        body = copy.deepcopy(base or {}) if last is not None else _prepare_flat(base or {}, tenant, fresh=not same_key)
        body["tenant_id"] = tenant.tenant_id
        key = str(body.get("command_id") or "")
        result = api_call(username=username, tenant_id=tenant.tenant_id, method="POST", path=payload.path, body=body)
    else:
        body = _prepare_envelope(base or {}, tenant, fresh=not same_key, is_command=payload.kind == kind.COMMAND)
        key = str(body["meta"].get("idempotency_key") or "")
        headers = {"X-Idempotency-Key": key, "X-Correlation-ID": str(body["meta"].get("correlation_id") or "")}
        result = api_call(
            username=username, tenant_id=tenant.tenant_id, method="POST", path=payload.path, body=body, headers=headers
        )
    send = _record(user=user, tenant=tenant, origin=PanelSend.Origin.LIBRARY, payload=payload, result=result, key=key)
    return result, send


def _enqueue_report(
    *, payload: LibraryPayload, tenant: Tenant, base: dict[str, Any], same_key: bool, last: PanelSend | None
) -> tuple[ApiResult, str]:
    """The outbound report goes through the real callback outbox, which de-duplicates on its dedup key."""
    from callbacks.services import callback_enqueue

    actor = base.get("actor") or {}
    login = actor.get("account_login")
    # No login matches no account (filtering on login=None would find none either).
    account = (
        None
        if login is None
        else on_server(TradingAccount.objects.filter(tenant=tenant, login=login), str(actor.get("server", ""))).first()
    )
    path = payload.path
    body: dict[str, Any]
    if account is None:
        body = {"detail": f"Account {actor.get('account_login')}@{actor.get('server')} is not registered for {tenant}."}
        return ApiResult("OUTBOX", path, {}, base, 404, {}, body), ""
    dedup_key = _report_dedup_key(tenant=tenant, base=base, same_key=same_key, last=last)
    from callbacks.models import CallbackDelivery

    deduplicated = CallbackDelivery.objects.filter(tenant=tenant, dedup_key=dedup_key).exists()
    with transaction.atomic():
        delivery = callback_enqueue(
            tenant=tenant,
            account=account,
            request_type="protective_action_report",
            payload=base.get("payload") or {},
            dedup_key=dedup_key,
            correlation_id=str(uuid.uuid4()),
            session_id=str((base.get("context") or {}).get("session_id") or "risk-engine"),
            correlation_group=str((base.get("context") or {}).get("correlation_group") or "protective-action"),
            source_kind="panel",
            source_id=payload.slug,
        )
    body = {
        "status": "already_queued" if deduplicated else "queued",
        "delivery_id": delivery.pk,
        "delivery_status": delivery.status,
        "idempotency_key": delivery.idempotency_key,
        "envelope": delivery.envelope,
    }
    headers = {"Idempotent-Replayed": "true"} if deduplicated else {}
    result = ApiResult("OUTBOX", path, {}, delivery.envelope, 200 if deduplicated else 202, headers, body)
    return result, delivery.idempotency_key


def _report_dedup_key(*, tenant: Tenant, base: dict[str, Any], same_key: bool, last: PanelSend | None) -> str:
    """The outbox dedup key of a report sent from the panel; the outbox mints its identity.

    Fresh: a new key, so a new callback with a new identity. The same key: the key of the last
    send's callback (the outbox returns that row, identity and all), or, when there is none, a key
    named after the stored body's idempotency key. A key that makes a new row is always under
    ``panel:``, a name no report of the bridge's own (``command-result:…``,
    ``protective-action:…``) can take; and the body's idempotency key is never sent as one.
    """
    from callbacks.models import CallbackDelivery

    if not same_key:
        return f"panel:{uuid.uuid4()}"
    if last is not None and last.idempotency_key:
        sent = CallbackDelivery.objects.filter(tenant=tenant, idempotency_key=last.idempotency_key).first()
        if sent is not None:
            return sent.dedup_key
    meta = base.get("meta") or {}
    return f"panel:{str(meta.get('idempotency_key') or uuid.uuid4())[:240]}"


@transaction.atomic
def command_cancel(*, user: Any, command: Command) -> bool:
    """Cancel a command that has not started executing; False when it is already past that point.

    The row lock orders this against the lane's claim (an UPDATE ... WHERE state = 'queued'), so a
    command is either cancelled or executed, never both.
    """
    _check_tenant(user, command.tenant)
    locked = Command.objects.select_for_update().select_related("tenant", "account").get(pk=command.pk)
    if not can_transition(locked.state, State.CANCELLED):
        return False
    locked.transition(
        State.CANCELLED,
        note=f"cancelled in the panel by {user.get_username()}",
        error_code="cancelled",
        error_message=f"Cancelled by {user.get_username()} in the operational panel.",
    )
    # What an executed command does when it finishes: Laravel gets its command_result, a
    # protective action its outcome.
    from execution.results import command_finished

    command_finished(locked)
    return True


def callback_resend_for(*, user: Any, delivery: Any) -> Any:
    """Re-send a callback delivery now (callbacks.services.callback_resend), within the user's tenants."""
    from callbacks.services import callback_resend

    _check_tenant(user, delivery.tenant)
    return callback_resend(delivery=delivery)


ACCOUNT_SWITCHES = (Switch.DISABLE, Switch.CLOSE_ALL_AND_DISABLE, Switch.ENABLE)
TENANT_SWITCHES = (Switch.HALT_TENANT, Switch.RESUME_TENANT)


def kill_switch_use(
    *, user: Any, switch: str, reason: str, account: TradingAccount | None = None, tenant: Tenant | None = None
) -> KillSwitchUse:
    """Use a kill switch on an account or a tenant (risk.kill_switch raises the commands) and record who and why.

    The commands and the record commit together; risk.kill_switch.KillSwitchRefused (no reason,
    nothing to act on) leaves neither.
    """
    target = account.tenant if account is not None else tenant
    if target is None:
        raise PanelError("Name an account or a tenant.")
    _check_tenant(user, target)
    username = user.get_username()
    with transaction.atomic():
        if account is not None:
            if switch not in ACCOUNT_SWITCHES:
                raise PanelError(f"{switch} is not an account's switch.")
            commands = account_switch(account=account, switch=switch, reason=reason, actor=username)
        else:
            if switch not in TENANT_SWITCHES:
                raise PanelError(f"{switch} is not a tenant's switch.")
            commands = tenant_switch(tenant=target, switch=switch, reason=reason, actor=username)
        use = KillSwitchUse.objects.create(
            tenant=target,
            account=account,
            switch=switch,
            reason=" ".join(reason.split()),
            username=username,
            environment=environment_label(),
            commands=[c.command_id for c in commands],
        )
    logger.warning(
        "kill switch",
        extra={
            "switch": switch,
            "tenant": target.tenant_id,
            "account": account.login if account else None,
            "user": username,
            "commands": len(commands),
        },
    )
    return use
