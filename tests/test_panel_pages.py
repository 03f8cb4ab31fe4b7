"""The environment page, the command catalogue and its OpenAPI UI, the account's risk chart, and big-table speed."""

# ruff: noqa: F811  (the personas' fixtures are imported from tests.test_panel_personas, then named as arguments)

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from bridgeproject.errors import BridgeError
from callbacks.models import CallbackAttempt
from commands.models import Command, CommandEvent
from commands.validation import validate_command_payload
from panel.catalogue import catalogue_entries
from panel.charts import risk_series
from panel.environment import mask_url, settings_env_names
from panel.fieldspec import COMMAND_TYPES
from panel.payloads import COMMAND, FLAT_COMMAND, POLICY_SNAPSHOT, validate_request
from policies.models import RiskSample
from tests.conftest import Api, fresh
from tests.test_panel_personas import World, logged_in, protective_action, report, root, world  # noqa: F401

# --- environment -----------------------------------------------------------------------------------


def test_the_environment_page_lists_every_variable_and_never_shows_a_secret(
    root: User, world: World, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    monkeypatch.delenv("DJANGO_SECRET_KEY", raising=False)
    monkeypatch.setenv("LARAVEL_INTERNAL_TOKEN", "very-secret-laravel-token")
    monkeypatch.setenv("LARAVEL_API_URL", "https://laravel.example.test")
    monkeypatch.setenv("DATABASE_URL", "postgres://bridge:hunter2-password@db:5432/bridge")
    content = logged_in(root).get(reverse("panel:environment")).content.decode()
    for name in settings_env_names():
        assert f"<th>{name}</th>" in content
    assert "very-secret-laravel-token" not in content and "hunter2-password" not in content
    assert settings.SECRET_KEY not in content  # an unset secret shows no default either
    assert "https://laravel.example.test" in content and "postgres://bridge:••••••@db:5432/bridge" in content
    for header in ("Authorization", "Content-Type", "X-Correlation-ID", "X-Idempotency-Key", "X-Protocol-Version"):
        assert f"<th>{header}</th>" in content
    assert "meta.protocol_version" in content and "1.0" in content


def test_every_variable_of_the_protocol_is_found_in_the_settings() -> None:
    names = set(settings_env_names())
    assert {"PYTHON_INGEST_TOKEN", "PYTHON_BRIDGE_URL", "LARAVEL_INTERNAL_TOKEN", "LARAVEL_API_URL"} <= names
    assert {"LARAVEL_WEBHOOK_SECRET", "DATABASE_URL", "MT5_BACKEND"} <= names


def test_a_url_loses_only_its_password() -> None:
    assert mask_url("postgres://u:p@h:5432/d") == "postgres://u:••••••@h:5432/d"
    assert mask_url("https://laravel.example.test/api") == "https://laravel.example.test/api"


def test_the_environment_page_shows_each_lane_the_mt5_backend_and_the_outbox(root: User, world: World) -> None:
    context = logged_in(root).get(reverse("panel:environment")).context["report"]
    lanes = dict(context["lanes"])
    assert set(lanes) == {"normal", "fast"}
    assert {"workers_alive", "queue_depth", "oldest_task_age_s"} <= set(lanes["fast"])
    assert lanes["fast"]["queue_depth"] == 2  # both tenants' close_positions, waiting for a fast-lane cluster
    assert context["mt5"]["backend"] == "simulator"
    assert context["outbox"]["dead_letters"] == 2 and len(context["outbox"]["recent_dead"]) == 2


# --- catalogue and OpenAPI UI ----------------------------------------------------------------------


def test_the_catalogue_has_every_request_and_command_type_with_a_valid_example(root: User, world: World) -> None:
    entries = {entry.key: entry for entry in catalogue_entries()}
    assert {f"command-{ct}" for ct in COMMAND_TYPES} | {"policy_snapshot", "flat_command", "sync_request"} <= set(
        entries
    )
    assert {"protective_action_report", "command_result"} <= set(entries)
    import json

    for command_type in COMMAND_TYPES:
        entry = entries[f"command-{command_type}"]
        assert validate_request(COMMAND, json.loads(entry.example)) == [], command_type
        assert entry.lane.startswith("normal by default") and "critical" in entry.lane
    assert validate_request(POLICY_SNAPSHOT, json.loads(entries["policy_snapshot"].example)) == []
    assert validate_request(FLAT_COMMAND, json.loads(entries["flat_command"].example)) == []
    fields = {row["name"]: row for row in entries["command-close_positions"].fields}
    assert fields["payload.target.mode"]["limits"].startswith("all_positions | by_symbol")
    assert fields["payload.priority"]["default"] == '"normal"' and not fields["payload.priority"]["required"]
    page = logged_in(root).get(reverse("panel:catalogue"))
    assert page.status_code == 200 and b"/api/v1/docs" in page.content


def test_the_catalogues_cross_field_rules_are_the_request_models_rules() -> None:
    def errors(command_type: str, fields: dict[str, Any]) -> list[str]:
        with pytest.raises(BridgeError) as refused:
            validate_command_payload({"command_id": "c-1", "command_type": command_type, **fields})
        return [error["field"] for error in refused.value.errors]

    assert errors("close_positions", {"target": {"mode": "by_symbol"}}) == ["payload.target.symbols"]
    assert errors("close_positions", {"target": {"mode": "by_tickets"}}) == ["payload.target.tickets"]
    assert errors("modify_position", {"ticket": 5}) == ["payload.stop_loss"]


def test_the_openapi_ui_is_served_from_the_projects_own_static_files(client: Any, db: None) -> None:
    page = client.get("/api/v1/docs")
    assert page.status_code == 200
    html = page.content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in html
    assert "cdn" not in html.lower() and "unpkg" not in html.lower()
    assert client.get("/api/v1/schema").status_code == 200


# --- the account page ---------------------------------------------------------------------------------


def test_the_account_page_draws_equity_balance_both_floors_and_the_breaches(root: User, world: World) -> None:
    page = logged_in(root).get(reverse("admin:policies_tradingaccount_risk", args=[world.account_1.pk]) + "?range=1h")
    chart = page.context["chart"]
    assert chart["points"] == 30 and not chart["bucketed"]
    assert [len(chart["series"][name]) for name in ("equity", "balance", "daily_floor", "total_floor")] == [30] * 4
    assert chart["series"]["daily_floor"][0][1] == 93575.0
    assert [b["label"] for b in chart["breaches"]] == ["daily_drawdown (day:1): success"]
    assert b'id="risk-chart-data"' in page.content and b"panel/account_chart.js" in page.content


def test_a_long_range_keeps_the_lowest_equity_of_each_bucket(world: World) -> None:
    now = timezone.now().replace(second=30, microsecond=0)
    RiskSample.objects.filter(account=world.account_1).delete()
    RiskSample.objects.bulk_create(
        RiskSample(
            account=world.account_1,
            at=now - timedelta(hours=2, seconds=seconds),
            balance=Decimal("100000"),
            equity=Decimal(equity),
            daily_floor=Decimal("95000"),
            total_floor=Decimal("90000"),
        )
        for seconds, equity in ((0, 99000), (5, 94000), (10, 98000))
    )
    chart = risk_series(world.account_1, "24h", now=now)
    assert chart["bucketed"] and chart["points"] == 1
    assert chart["series"]["equity"][0][1] == 94000.0


# --- big tables: no N+1, no COUNT(*), indexes behind every filter ---------------------------------


def many_rows(world: World, client: Any, start: int, n: int) -> None:
    """n more commands, each with a protective action, its report and a failed attempt."""
    alice = Api(client, "alice-token-tenant-1")
    for i in range(start, start + n):
        body = fresh("close_positions")
        body["payload"]["command_id"] = f"bulk-{i}"
        assert alice.post("mt5/commands", body).status_code == 202
        command = Command.objects.get(command_id=f"bulk-{i}")
        action = protective_action(world.account_1, command, scope=f"ticket:{i}", rule="single_trade_loss")
        delivery = report(action, f"bulk-report-{i}")
        CallbackAttempt.objects.create(delivery=delivery, number=1, status_code=503, outcome="retry")


LISTS = [
    "commands.command",
    "commands.commandevent",
    "commands.idempotencyrecord",
    "policies.protectiveaction",
    "policies.tradingaccount",
    "policies.policysnapshot",
    "policies.accountrisk",
    "policies.risksample",
    "callbacks.callbackdelivery",
    "callbacks.callbackattempt",
    "tenancy.apitoken",
    "panel.panelsend",
]


def queries_for(client: Any, url: str) -> list[str]:
    with CaptureQueriesContext(connection) as captured:
        assert client.get(url).status_code == 200
    return [query["sql"] for query in captured.captured_queries]


def test_list_pages_cost_the_same_queries_for_3_rows_or_30(root: User, world: World, client: Any) -> None:
    admin_client = logged_in(root)
    urls = {label: reverse(f"admin:{label.replace('.', '_')}_changelist") for label in LISTS}
    many_rows(world, client, 0, 3)
    few = {label: len(queries_for(admin_client, url)) for label, url in urls.items()}
    many_rows(world, client, 3, 27)
    assert CommandEvent.objects.count() > 60
    many = {label: len(queries_for(admin_client, url)) for label, url in urls.items()}
    assert many == few


@pytest.mark.parametrize(
    "label",
    [
        "commands.command",
        "commands.commandevent",
        "commands.idempotencyrecord",
        "policies.protectiveaction",
        "callbacks.callbackdelivery",
    ],
)
def test_the_big_tables_are_never_counted(root: User, world: World, label: str) -> None:
    sql = queries_for(logged_in(root), reverse(f"admin:{label.replace('.', '_')}_changelist") + "?tenant=1")
    table = {"commands.command": "commands_command", "policies.protectiveaction": "policies_protectiveaction"}.get(
        label
    )
    assert not [q for q in sql if "COUNT(" in q.upper() and (table is None or table in q)]


def test_every_search_and_selective_filter_of_the_commands_list_has_an_index(db: None) -> None:
    with connection.cursor() as cursor:
        indexes = {
            index: definition
            for index, definition in (
                (row[0], row[1])
                for row in connection.introspection.get_constraints(cursor, "commands_command").items()
                if row[1]["index"]
            )
        }
    covered = {tuple(definition["columns"]) for definition in indexes.values()}
    # The id searches read expression indexes (UPPER(col) text_pattern_ops): the search test asks the planner.
    for columns in (
        ("state", "received_at"),
        ("tenant_id", "received_at", "id"),
        ("received_at", "id"),
    ):
        assert columns in covered, columns
    # Lane (two values) and type (eight, all common) read the newest-first index and stop after a
    # page: an index of their own would cost every accepted command two more writes.
    assert ("lane", "received_at") not in covered
    assert ("command_type", "received_at") not in covered


def test_a_search_matches_the_beginning_of_an_id_in_any_case_through_its_index(root: User, world: World) -> None:
    from commands.models import IdempotencyRecord

    client = logged_in(root)
    url = reverse("admin:commands_command_changelist")
    for term in (world.command_1.command_id, world.command_1.correlation_id, world.command_1.idempotency_key):
        rows = client.get(url, {"q": term[:7].swapcase()}).context["cl"].result_list
        assert world.command_1 in rows, term
    assert list(client.get(url, {"q": "CMD-1"}).context["cl"].result_list) == [world.command_1]
    assert not client.get(url, {"q": world.command_1.idempotency_key[1:9]}).context["cl"].result_list  # not a prefix
    records = reverse("admin:commands_idempotencyrecord_changelist")
    found = client.get(records, {"q": world.command_1.idempotency_key[:9].upper()}).context["cl"].result_list
    assert [r.key for r in found] == [world.command_1.idempotency_key]
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")  # a test table is tiny: ask whether the index can serve
    for field, index in (
        ("command_id", "panel_cmd_command_id_ci"),
        ("correlation_id", "panel_cmd_correlation_ci"),
        ("idempotency_key", "panel_cmd_idem_key_ci"),
    ):
        plan = Command.objects.filter(**{f"{field}__istartswith": "Ab1"}).order_by().explain()
        assert index in plan, plan
    plan = IdempotencyRecord.objects.filter(key__istartswith="Ab1").order_by().explain()
    assert "panel_idem_key_ci" in plan, plan


def test_the_dashboard_counts_only_what_the_user_may_see(world: World) -> None:
    from tests.test_panel_personas import make_user

    tess = make_user("tess", groups=("operators",), scope=[world.tenant_1])
    cards = {
        card["label"]: card["value"] for card in logged_in(tess).get(reverse("admin:index")).context["panel_cards"]
    }
    assert cards["Commands, last hour"] == 1
    assert cards["Accounts in breach"] == 1
    assert cards["Callbacks dead-lettered"] == 1
