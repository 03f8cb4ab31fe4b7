"""Standard Webhooks signatures (https://www.standardwebhooks.com/, spec v1) for callbacks to Laravel.

The signed content is ``"{webhook-id}.{webhook-timestamp}.{body}"``, HMAC-SHA256, base64, sent as
``webhook-signature: v1,<signature>`` (several space-separated signatures are allowed while a
secret is rotated; `verify()` accepts any of them).

The key: the secret is base64, written with or without the spec's ``whsec_`` prefix; the key is
the decoded bytes either way, exactly as the Standard Webhooks reference libraries read it
(``Webhook(secret)`` in Python, ``new Webhook($secret)`` in PHP, on the Laravel side, for both
forms). Padding may be left off, as those libraries allow. A secret that is not base64, or that
decodes to nothing, is refused with a ValueError (the delivery process refuses to start with it)
rather than being used some other way: a secret read differently on the two sides would fail
every signature.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from collections.abc import Mapping

SECRET_PREFIX = "whsec_"
SIGNATURE_VERSION = "v1"
# The spec's recommended tolerance: older (or future) timestamps are refused against replays.
DEFAULT_TOLERANCE_SECONDS = 5 * 60
_BASE64 = re.compile(r"[A-Za-z0-9+/]+")


def secret_key(secret: str) -> bytes:
    """The HMAC key a configured secret stands for: its base64 part decoded (see the module docstring)."""
    encoded = secret.removeprefix(SECRET_PREFIX)
    data = encoded.rstrip("=")
    padding = len(encoded) - len(data)
    if not data or padding > 2 or len(data) % 4 == 1 or not _BASE64.fullmatch(data):
        raise ValueError(
            "the webhook secret must be base64 (standard alphabet), with or without the whsec_ prefix, "
            "as Standard Webhooks libraries read it"
        )
    return base64.b64decode(data + "=" * (-len(data) % 4), validate=True)


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
