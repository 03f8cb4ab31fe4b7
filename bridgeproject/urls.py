from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("commands.urls")),
]

handler404 = "bridgeproject.errors.handler404"
handler500 = "bridgeproject.errors.handler500"
