"""Standard Webhooks signatures (https://www.standardwebhooks.com/, spec v1) for callbacks to Laravel.

The signed content is ``"{webhook-id}.{webhook-timestamp}.{body}"``, HMAC-SHA256, base64, sent as
``webhook-signature: v1,<signature>`` (several space-separated signatures are allowed while a
secret is rotated; `verify()` accepts any of them).

The key: a secret written ``whsec_<base64>`` (the spec's form) is the base64-decoded part; any other
secret is used as its raw UTF-8 bytes. On the Laravel side (standard-webhooks/standard-webhooks PHP)
that is ``new Webhook('whsec_...')`` for the first kind and ``Webhook::fromRaw($secret)`` for the
second — the plain constructor would base64-decode a secret without the prefix.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Mapping

SECRET_PREFIX = "whsec_"
SIGNATURE_VERSION = "v1"
# The spec's recommended tolerance: older (or future) timestamps are refused against replays.
DEFAULT_TOLERANCE_SECONDS = 5 * 60


def secret_key(secret: str) -> bytes:
    """The HMAC key a configured secret stands for (see the module docstring)."""
    if secret.startswith(SECRET_PREFIX):
        try:
            return base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
        except binascii.Error as exc:
            raise ValueError("a whsec_ secret must be base64 after the prefix") from exc
    return secret.encode("utf-8")


def sign(*, secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header value for one message."""
    signed = b"%s.%d.%s" % (msg_id.encode("utf-8"), timestamp, body)
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode('ascii')}"


def signature_headers(*, secret: str, msg_id: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """The three Standard Webhooks headers for a body about to be sent."""
    ts = int(time.time()) if timestamp is None else timestamp
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": sign(secret=secret, msg_id=msg_id, timestamp=ts, body=body),
    }


def verify(
    *,
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> bool:
    """Whether a received message is signed with `secret` and fresh, as a receiver checks it."""
    lowered = {key.lower(): value for key, value in headers.items()}
    msg_id = lowered.get("webhook-id")
    raw_timestamp = lowered.get("webhook-timestamp")
    header = lowered.get("webhook-signature")
    if not msg_id or not raw_timestamp or not header:
        return False
    try:
        timestamp = int(raw_timestamp)
    except ValueError:
        return False
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_seconds:
        return False
    expected = sign(secret=secret, msg_id=msg_id, timestamp=timestamp, body=body).encode("ascii")
    for candidate in header.split():
        version, _, _signature = candidate.partition(",")
        # Constant-time, so a forger learns nothing from how long a wrong guess took to refuse.
        if version == SIGNATURE_VERSION and hmac.compare_digest(candidate.encode("ascii", "replace"), expected):
            return True
    return False
