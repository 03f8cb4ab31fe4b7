from __future__ import annotations

from django.db import transaction

from tenancy.models import ApiToken, Tenant, new_token_value


@transaction.atomic
def token_create(*, tenant_ids: list[str], name: str, raw: str | None = None) -> tuple[ApiToken, str]:
    """Create a token scoped to the tenants (created when new); returns the row and the raw value."""
    raw = raw or new_token_value()
    tenants = [Tenant.objects.get_or_create(tenant_id=tenant_id)[0] for tenant_id in tenant_ids]
    token = ApiToken(name=name)
    token.set_raw(raw)
    existing = ApiToken.objects.filter(key_hash=token.key_hash).first()
    if existing is not None:
        existing.tenants.add(*tenants)
        return existing, raw
    token.save()
    token.tenants.set(tenants)
    return token, raw
