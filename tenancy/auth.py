"""Bearer-token authentication: tokens are looked up by hash, compared in constant time."""

from __future__ import annotations

import hmac
import threading
import time
from dataclasses import dataclass
from typing import cast

from django.conf import settings
from django.utils import timezone
from rest_framework.authentication import BaseAuthentication
from rest_framework.exceptions import AuthenticationFailed, Throttled
from rest_framework.request import Request

from bridgeproject.ratelimit import auth_failures, client_of
from tenancy.models import ApiToken, hash_token

_LAST_USED_EVERY_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a token and the tenants it may act for."""

    token_id: int | None  # None for the PYTHON_INGEST_TOKEN from the environment
    name: str
    tenant_ids: frozenset[str]

    is_authenticated = True

    def may_act_for(self, tenant_id: str) -> bool:
        return tenant_id in self.tenant_ids


class _TokenCache:
    """A few seconds of memory per token hash, so a hot client costs no query per request."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[float, Principal | None]] = {}
        self._last_used: dict[int, float] = {}

    def get(self, key_hash: str) -> tuple[bool, Principal | None]:
        entry = self._entries.get(key_hash)
        if entry is None or entry[0] < time.monotonic():
            return False, None
        return True, entry[1]

    def put(self, key_hash: str, principal: Principal | None) -> None:
        with self._lock:
            if len(self._entries) > 10_000:
                self._entries.clear()
            self._entries[key_hash] = (time.monotonic() + settings.API_TOKEN_CACHE_SECONDS, principal)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._last_used.clear()

    def __len__(self) -> int:
        return len(self._entries) + len(self._last_used)

    def should_touch(self, token_id: int) -> bool:
        now = time.monotonic()
        with self._lock:
            if now - self._last_used.get(token_id, -1e9) < _LAST_USED_EVERY_SECONDS:
                return False
            self._last_used[token_id] = now
            return True


token_cache = _TokenCache()


def _lookup(key_hash: str) -> Principal | None:
    token = ApiToken.objects.filter(key_hash=key_hash, revoked_at__isnull=True).first()
    # The index finds the row; compare_digest keeps the final comparison constant-time.
    if token is None or not hmac.compare_digest(token.key_hash, key_hash):
        return None
    tenants = frozenset(token.tenants.values_list("tenant_id", flat=True))
    return Principal(token_id=token.pk, name=token.name, tenant_ids=tenants)


def principal_of(request: Request) -> Principal:
    """The caller of an authenticated API request. The stubs type `request.user` as Django's user,
    but BearerTokenAuthentication (the only authentication class) makes it a Principal, and
    IsAuthenticated refuses the request before the view when there is none."""
    return cast(Principal, request.user)


def authenticate_token(raw: str) -> Principal | None:
    """The principal for a raw bearer token, or None when it is unknown or revoked."""
    env_token = settings.PYTHON_INGEST_TOKEN
    if env_token and hmac.compare_digest(raw.encode(), env_token.encode()):
        return Principal(
            token_id=None, name="PYTHON_INGEST_TOKEN", tenant_ids=frozenset(settings.PYTHON_INGEST_TENANTS)
        )
    key_hash = hash_token(raw)
    hit, principal = token_cache.get(key_hash)
    if not hit:
        principal = _lookup(key_hash)
        token_cache.put(key_hash, principal)
    if principal is not None and principal.token_id is not None and token_cache.should_touch(principal.token_id):
        ApiToken.objects.filter(pk=principal.token_id).update(last_used_at=timezone.now())
    return principal


class BearerTokenAuthentication(BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[Principal, str] | None:
        # A valid token is never refused because of failures from its address (PROTOCOL §9
        # "Abuse limits"): Laravel's critical closes must not wait behind an attacker sharing a
        # NAT or proxy with it. Only a failed attempt consults the per-client block, which is
        # kept in memory, so a blocked client's guesses cost one token lookup and no count.
        client = client_of(request._request)
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            raise AuthenticationFailed("Send Authorization: Bearer <token>.")
        scheme, _, raw = header.partition(" ")
        raw = raw.strip()
        if scheme.lower() != "bearer" or not raw or len(raw) > 512:
            self._failed(client)
            raise AuthenticationFailed("The Authorization header must be 'Bearer <token>'.")
        principal = authenticate_token(raw)
        if principal is None:
            self._failed(client)
            raise AuthenticationFailed("The token is unknown or revoked.")
        return principal, raw

    @staticmethod
    def _failed(client: str) -> None:
        """Count a failed attempt; past the per-client limit the answer is 429, not 401."""
        wait = auth_failures.blocked_for(client)
        if wait:  # already blocked, known from memory: no count, no query
            raise Throttled(wait=wait, detail="Too many failed authentications from this client.")
        verdict = auth_failures.record_failure(client)
        if verdict.blocked:
            raise Throttled(wait=verdict.retry_after, detail="Too many failed authentications from this client.")

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="mt5-bridge"'
