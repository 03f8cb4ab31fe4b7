"""Per-client limit on failed authentications: unknown-token floods and brute force get 429.

Who is a client: the peer address (``REMOTE_ADDR``), or, only when ``TRUSTED_PROXY_COUNT`` says
how many proxies we run in front of the bridge, the address the outermost of them saw in
``X-Forwarded-For``. IPv6 clients are grouped by their /64 (one host usually owns a whole /64).

How it counts: every failed authentication adds one to the client's counter for the current
fixed window (``AUTH_FAILURE_WINDOW_SECONDS``) in a store every process shares — Redis when
``REDIS_URL`` is set (atomic INCR), else Django's ``default`` cache (the database cache table;
its ``incr`` is read-then-write, so racing failures may be undercounted by the few requests
a process serves at once: the limit is approximate there, exact with Redis). Past
``AUTH_FAILURES_PER_MINUTE`` the client gets **429** with ``Retry-After`` until the window ends.

Why a valid token stays fast and is never refused: the success path touches no store, and a
request with a valid token is answered whatever failures its address has piled up (PROTOCOL
§9 "Abuse limits": Laravel may share an address with whoever is guessing, and its critical
closes must go through). Only a failed attempt consults the limiter. A block, once a process
has seen it, is remembered in that process's memory, so a blocked client's further guesses are
answered 429 without being counted (one token lookup each, cached). Another process learns of
the block at the client's first failure there, so the guesses one client gets answered 401 per
window are bounded by the limit plus one per process.

A broken store never locks anyone out: the limiter fails open (and logs it).
"""

from __future__ import annotations

import ipaddress
import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.cache import caches
from django.http import HttpRequest

logger = logging.getLogger("bridge.ratelimit")

KEY_PREFIX = "authfail"
_MAX_LOCAL_BLOCKS = 10_000


def client_of(request: HttpRequest) -> str:
    """The client a request comes from, as a stable string (an address or an IPv6 /64)."""
    meta = request.META
    raw = meta.get("REMOTE_ADDR") or ""
    hops = int(getattr(settings, "TRUSTED_PROXY_COUNT", 0) or 0)
    forwarded = meta.get("HTTP_X_FORWARDED_FOR") if hops > 0 else None
    if forwarded:
        # Each trusted proxy appends the address it saw: the client is `hops` entries from the
        # right. Entries further left are the client's own claims and are never believed.
        parts = [part.strip() for part in forwarded.split(",")[-64:]]
        raw = parts[-hops] if len(parts) >= hops else parts[0]
    return _normalise(raw) or _normalise(meta.get("REMOTE_ADDR") or "") or "unknown"


def _normalise(raw: str) -> str | None:
    try:
        address = ipaddress.ip_address(raw.strip()[:64])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network(f"{address}/64", strict=False))
    return str(address)


@dataclass(frozen=True, slots=True)
class Verdict:
    blocked: bool
    retry_after: int  # seconds until the window ends (only meaningful when blocked)
    failures: int


class _Store:
    """Counts failures per (client, window) in the shared store."""

    def __init__(self) -> None:
        self._redis: Any = None
        self._redis_url: str | None = None
        self._lock = threading.Lock()

    def _redis_client(self, url: str) -> Any:
        with self._lock:
            if self._redis is None or self._redis_url != url:
                import redis

                self._redis = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
                self._redis_url = url
            return self._redis

    def incr(self, key: str, ttl: int) -> int:
        url = getattr(settings, "RATE_LIMIT_REDIS_URL", "")
        if url:
            pipe = self._redis_client(url).pipeline(transaction=True)
            pipe.incr(key)
            pipe.expire(key, ttl, nx=True)
            count, _ = pipe.execute()
            return int(count)
        cache = caches["default"]
        if cache.add(key, 1, timeout=ttl):
            return 1
        try:
            return int(cache.incr(key))
        except ValueError:  # expired between add and incr
            cache.add(key, 1, timeout=ttl)
            return 1


class FailureLimiter:
    """The per-client failure counter and this process's memory of blocked clients."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._blocked: dict[str, float] = {}  # client -> wall-clock end of its block
        self.store = _Store()

    @staticmethod
    def _window() -> int:
        return max(1, int(getattr(settings, "AUTH_FAILURE_WINDOW_SECONDS", 60)))

    @staticmethod
    def _limit() -> int:
        return int(getattr(settings, "AUTH_FAILURES_PER_MINUTE", 30))

    def blocked_for(self, client: str) -> int:
        """Seconds this client is still blocked for, from memory only (no query); 0 when not."""
        until = self._blocked.get(client)
        if until is None:
            return 0
        left = until - time.time()
        if left <= 0:
            with self._lock:
                self._blocked.pop(client, None)
            return 0
        return max(1, math.ceil(left))

    def record_failure(self, client: str) -> Verdict:
        """Count one failed authentication; blocked once the count passes the limit."""
        limit = self._limit()
        if limit <= 0:
            return Verdict(blocked=False, retry_after=0, failures=0)
        window = self._window()
        now = time.time()
        index = int(now // window)
        window_end = (index + 1) * window
        try:
            failures = self.store.incr(f"{KEY_PREFIX}:{client}:{window}:{index}", ttl=window + 5)
        except Exception:  # the limiter must never be the reason nobody can authenticate
            logger.warning("auth failure limiter store unavailable; failing open", exc_info=True)
            return Verdict(blocked=False, retry_after=0, failures=0)
        if failures <= limit:
            return Verdict(blocked=False, retry_after=0, failures=failures)
        with self._lock:
            if len(self._blocked) >= _MAX_LOCAL_BLOCKS:
                self._blocked = {c: u for c, u in self._blocked.items() if u > now}
                if len(self._blocked) >= _MAX_LOCAL_BLOCKS:
                    self._blocked.clear()
            self._blocked[client] = window_end
        if failures == limit + 1:
            logger.warning("client blocked after repeated authentication failures", extra={"client": client})
        return Verdict(blocked=True, retry_after=max(1, math.ceil(window_end - now)), failures=failures)

    def clear(self) -> None:
        """Forget every block this process remembers (tests)."""
        with self._lock:
            self._blocked.clear()

    def __len__(self) -> int:
        return len(self._blocked)


auth_failures = FailureLimiter()
