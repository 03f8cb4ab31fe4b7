"""The operators and support groups, and the panel's example payloads, present from the first migrate."""

import copy

from django.db import migrations

# (slug, title, kind, body or None, account_login, description)
EXAMPLES = [
    (
        "close_positions",
        "Laravel → Python: close positions",
        "command",
        "close_positions",
        None,
        "The panel's close_positions command: critical priority, fast lane, all positions.",
    ),
    (
        "policy_snapshot",
        "Laravel → Python: policy snapshot",
        "policy_snapshot",
        "policy_snapshot",
        None,
        "The panel's policy snapshot (version 12); it registers account 50040367 for the tenant.",
    ),
    (
        "protective_action_report",
        "Python → Laravel: protective action report",
        "protective_action_report",
        "protective_action_report",
        None,
        "The panel's outbound report. Replaying it queues it in the callback outbox: Laravel receives it.",
    ),
    (
        "open_position",
        "PowerShell quick test: open_position (legacy flat body)",
        "flat_command",
        "legacy_open_position",
        None,
        "The PowerShell $body: command_id test-open-<time>, issued_at now; its key is the command_id.",
    ),
    (
        "sync_request",
        "PowerShell quick test: sync request",
        "sync_request",
        None,
        50040367,
        "GET /api/v1/mt5/accounts/50040367 with the bearer header: the live snapshot and risk state.",
    ),
]


def forwards(apps, schema_editor):
    from commands.examples import EXAMPLES as BODIES
    from panel.roles import sync_roles

    sync_roles(apps)
    payload_model = apps.get_model("panel", "LibraryPayload")
    for slug, title, kind, example, login, description in EXAMPLES:
        payload_model.objects.update_or_create(
            slug=slug,
            defaults={
                "title": title,
                "kind": kind,
                "body": copy.deepcopy(BODIES[example]) if example else None,
                "account_login": login,
                "description": description,
                "builtin": True,
                "tenant": None,
            },
        )


def backwards(apps, schema_editor):
    apps.get_model("panel", "LibraryPayload").objects.filter(builtin=True).delete()
    apps.get_model("auth", "Group").objects.filter(name__in=["operators", "support"]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("panel", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("tenancy", "0001_initial"),
        ("commands", "0002_cache_table_and_queue_index"),
        ("policies", "0003_risk_state_and_protective_actions"),
        ("callbacks", "0001_initial"),
    ]

    operations = [migrations.RunPython(forwards, backwards)]
