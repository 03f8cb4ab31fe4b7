"""Tenant scoping of staff users: one rule, applied to every list, detail, filter, autocomplete and export.

- a superuser sees every tenant;
- a staff user sees the tenants of their StaffScope, or every tenant when it says `all_tenants`;
- a staff user without a StaffScope sees no tenant's rows (fails closed).

Rows that belong to no tenant (the terminals, the simulator, monitor heartbeats, staff scopes) are shown only
to users who see every tenant: they describe the whole bridge, not one tenant.
"""

from __future__ import annotations

from typing import Any, cast

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import Model, Q, QuerySet

from tenancy.models import Tenant

ALL = None  # "every tenant", as returned by visible_tenant_pks

# How each tenant-owned model reaches its Tenant. Models not named here belong to no tenant.
TENANT_LOOKUPS: dict[str, str] = {
    "tenancy.tenant": "pk",
    "policies.tradingaccount": "tenant",
    "policies.policysnapshot": "account__tenant",
    "policies.accountrisk": "account__tenant",
    "policies.risksample": "account__tenant",
    "policies.protectiveaction": "tenant",
    "commands.command": "tenant",
    "commands.commandevent": "command__tenant",
    "commands.idempotencyrecord": "tenant",
    "callbacks.callbackdelivery": "tenant",
    "callbacks.callbackattempt": "delivery__tenant",
    "panel.librarypayload": "tenant",
    "panel.panelsend": "tenant",
    "panel.killswitchuse": "tenant",
}
# Tokens name several tenants: one is visible only when every tenant it names is.
TOKEN_LABEL = "tenancy.apitoken"
# The library's shared examples (no tenant) are visible to everyone with access to the library.
SHARED_WHEN_NULL = frozenset({"panel.librarypayload"})

User = AbstractBaseUser | AnonymousUser


def sees_all_tenants(user: Any) -> bool:
    return visible_tenant_pks(user) is ALL


def visible_tenant_pks(user: Any) -> frozenset[int] | None:
    """The primary keys of the tenants the user may see, or ALL (None). Cached on the user object."""
    cached = getattr(user, "_panel_tenant_pks", False)
    if cached is not False:
        return cast("frozenset[int] | None", cached)  # only this function sets the attribute
    result: frozenset[int] | None
    if not getattr(user, "is_active", False) or not getattr(user, "is_staff", False):
        result = frozenset()
    elif user.is_superuser:
        result = ALL
    else:
        from panel.models import StaffScope

        scope = StaffScope.objects.filter(user_id=user.pk).first()
        if scope is None:
            result = frozenset()
        elif scope.all_tenants:
            result = ALL
        else:
            result = frozenset(scope.tenants.values_list("pk", flat=True))
    user._panel_tenant_pks = result
    return result


def visible_tenants(user: Any) -> QuerySet[Tenant]:
    return scope_queryset(Tenant.objects.all(), user)


def may_see_tenant(user: Any, tenant: Tenant | int | None) -> bool:
    pks = visible_tenant_pks(user)
    if pks is ALL:
        return True
    if tenant is None:
        return False
    return (tenant.pk if isinstance(tenant, Tenant) else tenant) in pks


def is_tenant_owned(model: type[Model]) -> bool:
    return model._meta.label_lower in TENANT_LOOKUPS or model._meta.label_lower == TOKEN_LABEL


def scope_queryset(queryset: QuerySet[Any], user: Any) -> QuerySet[Any]:
    """The rows of `queryset` the user may see."""
    pks = visible_tenant_pks(user)
    if pks is ALL:
        return queryset
    label = queryset.model._meta.label_lower
    if label == TOKEN_LABEL:
        outside = Tenant.objects.exclude(pk__in=pks)
        return queryset.filter(tenants__in=pks).exclude(tenants__in=outside).distinct()
    lookup = TENANT_LOOKUPS.get(label)
    if lookup is None:
        return queryset.none()
    condition = Q(**{f"{lookup}__in": pks})
    if label in SHARED_WHEN_NULL:
        condition |= Q(**{f"{lookup}__isnull": True})
    return queryset.filter(condition)
