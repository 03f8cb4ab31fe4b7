from django.urls import path
from drf_spectacular.views import SpectacularAPIView

from commands import api
from commands.health import HealthView
from execution.api import AccountView
from policies.api import ProtectiveActionsView

urlpatterns = [
    path("ingest", api.IngestView.as_view(), name="ingest"),
    path("mt5/commands", api.CommandsView.as_view(), name="commands"),
    path("mt5/commands/<str:command_id>", api.CommandDetailView.as_view(), name="command-detail"),
    path("mt5/accounts/<int:account_login>", AccountView.as_view(), name="account"),
    path(
        "mt5/accounts/<int:account_login>/protective-actions",
        ProtectiveActionsView.as_view(),
        name="account-protective-actions",
    ),
    path("mt5/policies", api.PoliciesView.as_view(), name="policies"),
    path("health", HealthView.as_view(), name="health"),
    path("schema", SpectacularAPIView.as_view(authentication_classes=[], permission_classes=[]), name="schema"),
]
