"""The OpenAPI document as the running app serves it, for the tests that hand it to third-party tools."""

from __future__ import annotations

import json
from typing import Any

from django.test import Client


def served_document(django_db_blocker: Any) -> dict[str, Any]:
    """GET /api/v1/schema, as a generator pointed at the URL gets it (a session fixture calls this:
    serving the document reads no table and writes none)."""
    with django_db_blocker.unblock():
        response = Client().get("/api/v1/schema")
    assert response.status_code == 200, response.content[:500]
    assert response["Content-Type"].startswith("application/vnd.oai.openapi+json")
    return json.loads(response.content)
