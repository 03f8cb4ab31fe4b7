"""Schemathesis hooks that steer part of the generated requests into the tenant's real data.

Purely random bodies nearly always stop at the first gate (an unknown tenant: 403). Three cases in
four keep what schemathesis generated but name the authenticated tenant, its registered account and
an idempotency key consistent between header and body, so the fuzzer also reaches validation,
idempotency, the account lookup and command creation. The choice is a function of the case's own
content, so a failing case replays identically. A component schemathesis made invalid on purpose
(negative testing) is left alone, or the steering would make it valid again.

Which tenant and account: FUZZ_TENANT, FUZZ_LOGIN and FUZZ_SERVER in the environment (the fuzz
drill sets them per run; the test sets them per tenant).
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import schemathesis


def _target() -> tuple[str, int, str] | None:
    tenant = os.environ.get("FUZZ_TENANT")
    if not tenant:
        return None
    return tenant, int(os.environ.get("FUZZ_LOGIN", "50040367")), os.environ.get("FUZZ_SERVER", "Broker-Server")


def _coin(case: Any) -> int:
    seen = json.dumps([case.path_parameters, case.query, case.body], sort_keys=True, default=str)
    return hashlib.blake2b(seen.encode(), digest_size=2).digest()[0] % 4


def _positive(case: Any, location: str) -> bool:
    """Was this component generated valid (positive mode)?"""
    meta = getattr(case, "_meta", None)
    for where, info in getattr(meta, "components", {}).items():
        if getattr(where, "value", where) == location:
            return str(getattr(info.mode, "value", info.mode)) == "positive"
    return True


@schemathesis.hook
def map_case(context: Any, case: Any) -> Any:
    target = _target()
    if target is None or _coin(case) == 0:
        return case
    tenant, login, server = target
    if case.path_parameters and "account_login" in case.path_parameters and _positive(case, "path"):
        case.path_parameters["account_login"] = login
    if case.headers and "X-Tenant-ID" in case.headers and _positive(case, "header"):
        case.headers["X-Tenant-ID"] = tenant
    body = case.body
    if isinstance(body, dict) and _positive(case, "body"):
        header_key = (case.headers or {}).get("X-Idempotency-Key")
        meta, actor = body.get("meta"), body.get("actor")
        if isinstance(meta, dict):
            meta["tenant_id"] = tenant
            if header_key is not None and "idempotency_key" in meta:
                meta["idempotency_key"] = header_key
        if isinstance(actor, dict):
            actor["account_login"] = login
            actor["server"] = server
        if "account_id" in body and "tenant_id" in body:  # the legacy flat command
            body["tenant_id"] = tenant
            body["account_id"] = login
    return case
