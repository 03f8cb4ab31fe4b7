"""The URL wiring, on top of every app: each app's routes, composed here and nowhere else."""

from django.contrib import admin
from django.urls import URLPattern, URLResolver, include, path
from drf_spectacular.views import SpectacularSwaggerView

from commands.openapi import SchemaView
from execution.health import HealthView
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

handler404 = "bridgeproject.errors.handler404"
handler500 = "bridgeproject.errors.handler500"
