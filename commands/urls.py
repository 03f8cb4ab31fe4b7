"""The commands API's routes (mounted under /api/v1/ by bridgeproject.urls)."""

from django.urls import path

from commands import api

urlpatterns = [
    path("ingest", api.IngestView.as_view(), name="ingest"),
    path("mt5/commands", api.CommandsView.as_view(), name="commands"),
    path("mt5/commands/<str:command_id>", api.CommandDetailView.as_view(), name="command-detail"),
    path("mt5/policies", api.PoliciesView.as_view(), name="policies"),
]
