from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularSwaggerView

urlpatterns = [
    path("admin/panel/", include("panel.urls")),
    path("admin/", admin.site.urls),
    path(
        "api/v1/docs",
        SpectacularSwaggerView.as_view(url_name="schema", authentication_classes=[], permission_classes=[]),
        name="api-docs",
    ),
    path("api/v1/", include("commands.urls")),
]

handler404 = "bridgeproject.errors.handler404"
handler500 = "bridgeproject.errors.handler500"
