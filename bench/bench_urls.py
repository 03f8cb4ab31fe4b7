"""The bridge's URLs plus a bare Django JSON view: the framework's ceiling on the same server."""

import json

from django.http import HttpRequest, JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from bridgeproject.urls import handler404, handler500  # noqa: F401
from bridgeproject.urls import urlpatterns as bridge_urls


@csrf_exempt
def bare(request: HttpRequest) -> JsonResponse:
    data = json.loads(request.body or b"{}")
    return JsonResponse({"status": "accepted", "keys": len(data)}, status=202)


urlpatterns = [path("bench/bare", bare), *bridge_urls]
