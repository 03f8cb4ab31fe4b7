"""The API's JSON: timestamps RFC 3339 UTC with a Z and millisecond precision (PROTOCOL §9)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rest_framework.renderers import JSONRenderer
from rest_framework.utils.encoders import JSONEncoder

from bridgeproject.jsonutil import utc_iso


class BridgeJSONEncoder(JSONEncoder):
    def default(self, obj: Any) -> Any:
        if isinstance(obj, datetime) and obj.tzinfo is not None:
            return utc_iso(obj)
        return super().default(obj)


class BridgeJSONRenderer(JSONRenderer):
    """DRF's JSON renderer; serializers hand it datetimes (DATETIME_FORMAT None) and it writes them
    in the one format of the protocol."""

    encoder_class = BridgeJSONEncoder
