"""Writes for accounts and policy snapshots."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, transaction

from bridgeproject.errors import BridgeError
from bridgeproject.jsonutil import jsonable, sha256_of
from policies import hooks
from policies.models import PolicySnapshot, TradingAccount, on_server
from tenancy.models import Tenant


def tenant_forbidden(detail: str = "This account belongs to another tenant.") -> BridgeError:
    return BridgeError(403, "tenant_forbidden", detail)


def account_get_for_tenant(*, tenant: Tenant, login: int, server: str | None = None) -> TradingAccount:
    """The tenant's account by login, and by server when one is named (PROTOCOL §9 "Identity of accounts").

    The login is resolved among the caller's own accounts only, so no other tenant's registration
    can make the request fail: the same login on several of the caller's servers and no server
    named is 409 `ambiguous_account` listing them. Only when the caller has no such account does
    another tenant's decide between 403 and 404.
    """
    own = TradingAccount.objects.filter(tenant=tenant, login=login)
    if server is not None:
        own = on_server(own, server)
    found = list(own.select_related("current_policy").order_by("server")[:MAX_SERVERS_LISTED])
    if len(found) == 1:
        return found[0]
    if found:
        servers = [account.server for account in found]
        raise BridgeError(
            409,
            "ambiguous_account",
            f"Login {login} is one of your accounts on several servers ({', '.join(servers)}): name one, with"
            " ?server= on a read or actor.server in an envelope.",
            extra={"servers": servers},
        )
    others = TradingAccount.objects.filter(login=login)
    if server is not None:
        others = on_server(others, server)
    if others.exists():
        raise tenant_forbidden()
    raise BridgeError(
        404,
        "account_not_found",
        f"Account {login} is not registered: Laravel registers an account by sending its first policy snapshot.",
    )


MAX_SERVERS_LISTED = 50


def _account_register(*, tenant: Tenant, actor: dict[str, Any]) -> TradingAccount:
    """The account of `actor` (server names compared trimmed and case-insensitively), created for
    `tenant` when it is new; 403 when another tenant holds it."""
    server = actor["server"].strip()
    account = on_server(TradingAccount.objects.filter(login=actor["account_login"]), server).first()
    if account is None:
        try:
            with transaction.atomic():  # a savepoint: a concurrent first snapshot may win the insert
                account = TradingAccount.objects.create(
                    tenant=tenant,
                    server=server,
                    login=actor["account_login"],
                    trading_account_id=actor["trading_account_id"],
                    platform=actor["platform"],
                )
        except IntegrityError:
            account = on_server(TradingAccount.objects.filter(login=actor["account_login"]), server).get()
    if account.tenant_id != tenant.pk:
        raise tenant_forbidden()
    return account


@dataclass(frozen=True, slots=True)
class PolicyResult:
    status: str  # applied | unchanged
    account: TradingAccount
    snapshot: PolicySnapshot


@transaction.atomic
def policy_apply(
    *,
    tenant: Tenant,
    actor: dict[str, Any],
    payload: dict[str, Any],
    envelope: dict[str, Any],
    correlation_id: str,
    idempotency_key: str,
) -> PolicyResult:
    """Store a snapshot under the version rules of PROTOCOL.md §5; the first one registers the account."""
    account = _account_register(tenant=tenant, actor=actor)
    # Lock the account so two snapshots for it are ordered, whatever their keys. NO KEY UPDATE:
    # rows that merely reference the account (commands, actions, callbacks) take KEY SHARE locks,
    # and must not queue behind a snapshot — the risk monitor inserts those while holding the
    # account's risk row, which this transaction locks next (a deadlock, seen under load).
    locked = TradingAccount.objects.select_for_update(of=("self",), no_key=True)
    account = locked.select_related("current_policy").get(pk=account.pk)
    normalised = jsonable(payload)
    fingerprint = sha256_of(normalised)
    version = payload["policy_version"]
    current = account.current_policy
    if current is not None:
        if version < current.policy_version:
            raise BridgeError(
                409,
                "stale_policy_version",
                f"Version {version} is older than the current version {current.policy_version}; nothing changed.",
                extra={"current_policy_version": current.policy_version},
            )
        if version == current.policy_version:
            if fingerprint == current.fingerprint:
                return PolicyResult(status="unchanged", account=account, snapshot=current)
            raise BridgeError(
                409,
                "policy_version_conflict",
                f"Version {version} is already held with a different payload; send a higher policy_version.",
                extra={"current_policy_version": current.policy_version},
            )
    snapshot = PolicySnapshot.objects.create(
        account=account,
        policy_version=version,
        payload=normalised,
        fingerprint=fingerprint,
        envelope=envelope,
        correlation_id=correlation_id,
        idempotency_key=idempotency_key,
    )
    account.current_policy = snapshot
    if actor.get("trading_account_id") and account.trading_account_id != actor["trading_account_id"]:
        account.trading_account_id = actor["trading_account_id"]
    account.save(update_fields=["current_policy", "trading_account_id"])
    hooks.policy_applied(account=account, snapshot=snapshot)
    return PolicyResult(status="applied", account=account, snapshot=snapshot)
