from __future__ import annotations

import hashlib
import secrets

from django.db import models
from django.utils import timezone


class Tenant(models.Model):
    """A prop firm (or a brand of one) as Laravel names it: `tenant_1`."""

    tenant_id = models.CharField(max_length=64, unique=True)
    name = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["tenant_id"]

    def __str__(self) -> str:
        return self.tenant_id


def hash_token(raw: str) -> str:
    """Tokens are stored only as their SHA-256: high-entropy secrets need no slow hash."""
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def new_token_value() -> str:
    return f"mt5b_{secrets.token_urlsafe(32)}"


class ApiToken(models.Model):
    """A bearer token scoped to one or more tenants. The raw value is shown once, never stored."""

    name = models.CharField(max_length=200)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    prefix = models.CharField(max_length=12, editable=False, help_text="The first characters, to tell tokens apart.")
    tenants = models.ManyToManyField(Tenant, related_name="tokens")
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    def set_raw(self, raw: str) -> None:
        """Store a raw token value as its hash and display prefix."""
        self.key_hash = hash_token(raw)
        self.prefix = raw[:8]

    def revoke(self) -> None:
        """Revoke the token now; requests with it fail with 401 (after the auth cache's few seconds)."""
        if self.revoked_at is None:
            self.revoked_at = timezone.now()
            self.save(update_fields=["revoked_at"])
