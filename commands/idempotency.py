"""The idempotency rule of PROTOCOL.md §6, in one place.

- Every POST has a key: `X-Idempotency-Key`, else `meta.idempotency_key`, else (legacy flat
  command only) `command_id`. Header and meta must agree. 1–255 printable ASCII characters.
- Keys are scoped per tenant. The first request with a key is processed and its response
  stored with the fingerprint of its canonical payload (meta.request_id and meta.sent_at_utc
  excluded, so a retry with a fresh send time still replays).
- Same key, same fingerprint: the stored response, with `Idempotent-Replayed: true`.
- Same key, different fingerprint: 422 `idempotency_key_reused`.
- Concurrent requests with one key: the second waits for the first's transaction on a row they
  both write, then replays its response — never a second execution.
- Errors are not stored (the transaction that would store them rolls back), so a client can
  fix its request and retry with the same key.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from bridgeproject.errors import BridgeError
from bridgeproject.jsonutil import sha256_of
from commands.models import IdempotencyRecord
from tenancy.models import Tenant

REPLAY_HEADER = "Idempotent-Replayed"
_FINGERPRINT_EXCLUDED_META = ("request_id", "sent_at_utc")


def resolve_key(*, header: str | None, body: dict[str, Any], legacy_flat: bool) -> str:
    """The request's idempotency key, from the header, the envelope, or the flat command_id."""
    meta = body.get("meta") if isinstance(body.get("meta"), dict) else None
    meta_key = meta.get("idempotency_key") if meta else None
    if header is not None and meta_key is not None and header != meta_key:
        raise BridgeError(400, "idempotency_key_mismatch", "X-Idempotency-Key and meta.idempotency_key must be equal.")
    key = header if header is not None else meta_key
    if key is None and legacy_flat:
        key = body.get("command_id")
    if key is None:
        raise BridgeError(
            400,
            "idempotency_key_required",
            "Send X-Idempotency-Key (or meta.idempotency_key; command_id for the legacy flat command).",
        )
    if not isinstance(key, str) or not 1 <= len(key) <= 255 or not all(32 <= ord(c) < 127 for c in key):
        raise BridgeError(
            400, "invalid_idempotency_key", "The idempotency key must be 1–255 printable ASCII characters."
        )
    return key


def fingerprint(body: dict[str, Any]) -> str:
    """SHA-256 of the canonical body, without the fields a client retry legitimately changes."""
    meta = body.get("meta")
    if isinstance(meta, dict):
        body = {**body, "meta": {k: v for k, v in meta.items() if k not in _FINGERPRINT_EXCLUDED_META}}
    return sha256_of(body)


@dataclass(frozen=True, slots=True)
class Outcome:
    status: int
    body: dict[str, Any]
    replayed: bool


# A stored response never changes once committed, so a process may remember it: a client's
# retries of a recent request then cost no query at all. Only the most recent responses are
# kept (the oldest goes first): a retry comes within seconds, and an older key costs one
# indexed read. The bound keeps a web worker's memory flat, about 1 kB an entry.
_remembered: dict[tuple[int, str], tuple[str, int, dict[str, Any]]] = {}
REMEMBER_AT_MOST = 1_000


def _remember(tenant_pk: int, key: str, fingerprint_: str, status: int, body: dict[str, Any]) -> None:
    _remembered[(tenant_pk, key)] = (fingerprint_, status, body)
    while len(_remembered) > REMEMBER_AT_MOST:
        del _remembered[next(iter(_remembered))]


def remembered_keys() -> list[tuple[int, str]]:
    """The (tenant pk, key) pairs this process remembers, oldest first."""
    return list(_remembered)


def forget_all() -> None:
    """Drop the in-process memory of stored responses (tests; after a prune)."""
    _remembered.clear()


Stored = tuple[str, int, dict[str, Any]]  # fingerprint, status, body


def _replay(stored: Stored, fingerprint_: str) -> Outcome:
    stored_fingerprint, status, body = stored
    if stored_fingerprint != fingerprint_:
        raise BridgeError(
            422,
            "idempotency_key_reused",
            "This idempotency key was already used with a different payload.",
        )
    return Outcome(status=status, body=body, replayed=True)


def _load(tenant: Tenant, key: str) -> Stored | None:
    """The committed record for this key, read from the database and remembered."""
    found = IdempotencyRecord.objects.filter(tenant=tenant, key=key)[:1]
    if not found:
        return None
    record = found[0]
    _remember(tenant.pk, key, record.fingerprint, record.status_code or 200, record.response_body or {})
    return _remembered[(tenant.pk, key)]


def find_replay(*, tenant: Tenant, key: str, fingerprint_: str) -> Outcome | None:
    """The outcome this process remembers for the key, or None (run_once settles the rest)."""
    remembered = _remembered.get((tenant.pk, key))
    return None if remembered is None else _replay(remembered, fingerprint_)


def new_record(
    *, tenant: Tenant, key: str, fingerprint_: str, method: str, path: str, request_type: str, correlation_id: str
) -> IdempotencyRecord:
    """The record of a first request with this key, unsaved until its response is known."""
    now = timezone.now()
    return IdempotencyRecord(
        tenant=tenant,
        key=key,
        fingerprint=fingerprint_,
        method=method,
        path=path,
        request_type=request_type,
        correlation_id=correlation_id,
        created_at=now,
        expires_at=now + timedelta(hours=settings.IDEMPOTENCY_RETENTION_HOURS),
    )


def complete(record: IdempotencyRecord, status: int, body: dict[str, Any], *, at: Any = None) -> IdempotencyRecord:
    """Fill in the response a record stores; the caller saves it with the request's effects."""
    record.status_code, record.response_body, record.completed_at = status, body, at or timezone.now()
    return record


def run_once(*, record: IdempotencyRecord, process: Callable[[], tuple[int, dict[str, Any]]]) -> Outcome:
    """Run `process` at most once per (tenant, key); its effects commit with the stored response.

    The record is inserted last, with the response, in the same transaction. A concurrent
    request with the same key either waits on a row it conflicts with (the command id, the
    account's lock) or on the record's unique index, and then finds the committed record: it
    replays that response instead of reporting its own conflict.
    """

    def attempt() -> tuple[int, dict[str, Any]]:
        with transaction.atomic():
            status, body = process()
            complete(record, status, body).save(force_insert=True)
        return status, body

    return _settle(record, attempt)


def run_once_storing(
    *, record: IdempotencyRecord, process: Callable[[IdempotencyRecord], tuple[int, dict[str, Any]]]
) -> Outcome:
    """`run_once` for a process that completes and stores the record itself, atomically with its
    effects (the command intake does it in one statement); conflicts settle the same way."""
    return _settle(record, lambda: process(record))


def _settle(record: IdempotencyRecord, attempt: Callable[[], tuple[int, dict[str, Any]]]) -> Outcome:
    try:
        status, body = attempt()
    except (IntegrityError, BridgeError):
        stored = _load(record.tenant, record.key)
        if stored is None:
            raise
        return _replay(stored, record.fingerprint)
    _remember(record.tenant.pk, record.key, record.fingerprint, status, body)
    return Outcome(status=status, body=body, replayed=False)


def prune_expired(*, now: Any = None) -> int:
    """Delete records past their retention; returns how many."""
    deleted, _ = IdempotencyRecord.objects.filter(expires_at__lt=now or timezone.now()).delete()
    forget_all()
    return deleted
