"""The panel's pages, mounted under /admin/panel/ and guarded by the admin site's login and staff check."""

from django.contrib import admin
from django.urls import path

from panel import views

app_name = "panel"

urlpatterns = [
    path("builder/", admin.site.admin_view(views.builder), name="builder"),
    path("builder/preview/", admin.site.admin_view(views.builder_preview), name="builder-preview"),
    path("builder/send/", admin.site.admin_view(views.builder_send), name="builder-send"),
    # Its own staff check: a signed-out poll is told to reload the page, not given a login form to swap in.
    path("dashboard/live/", views.dashboard_live, name="dashboard-live"),
    path("alerts/<int:pk>/acknowledge/", admin.site.admin_view(views.alert_acknowledge_view), name="alert-acknowledge"),
    path(
        "kill-switch/<str:kind>/<int:pk>/<str:switch>/",
        admin.site.admin_view(views.kill_switch),
        name="kill-switch",
    ),
    path("environment/", admin.site.admin_view(views.environment), name="environment"),
    path("catalogue/", admin.site.admin_view(views.catalogue), name="catalogue"),
]
