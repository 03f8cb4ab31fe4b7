"""The URL wiring, on top of every app: each app's routes, composed here and nowhere else."""

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, URLResolver, include, path
from drf_spectacular.views import SpectacularSwaggerView

from bridgeproject import errors
from commands.openapi import SchemaView
from execution.health import HealthView
from panel import views as panel_views
from risk.api import AccountView, ProtectiveActionsView

api_v1: list[URLPattern | URLResolver] = [
    path("", include("commands.urls")),
    path("mt5/accounts/<int:account_login>", AccountView.as_view(), name="account"),
    path(
        "mt5/accounts/<int:account_login>/protective-actions",
        ProtectiveActionsView.as_view(),
        name="account-protective-actions",
    ),
    path("health", HealthView.as_view(), name="health"),
    path("schema", SchemaView.as_view(), name="schema"),
]

urlpatterns = [
    path("admin/panel/", include("panel.urls")),
    path("admin/", admin.site.urls),
    path(
        "api/v1/docs",
        SpectacularSwaggerView.as_view(url_name="schema", authentication_classes=[], permission_classes=[]),
        name="api-docs",
    ),
    path("api/v1/", include(api_v1)),
]

# The API answers problem JSON; the panel (under /admin/) a page in its own chrome.
handler403 = "bridgeproject.urls.forbidden"
handler404 = "bridgeproject.urls.not_found"
handler500 = "bridgeproject.errors.handler500"


def forbidden(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if request.path.startswith("/admin/"):
        return panel_views.error_page(request, 403, exception)
    return errors.handler403(request, exception)


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if request.path.startswith("/admin/"):
        return panel_views.error_page(request, 404, exception)
    return errors.handler404(request, exception)
