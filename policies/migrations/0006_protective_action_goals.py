"""Protective actions become goals pursued until they hold (RISK_RULES.md "Enforcement that holds").

Every existing action gets its own `action_id` and the goal its `action` implies, and is marked as
met: the actions recorded before this release are history, not work to resume on upgrade.
"""

import uuid

from django.db import migrations, models
from django.db.models import F, Q

GOAL_OF_ACTION = {"close_position": "position_closed", "close_all": "account_flat"}


def existing_actions_are_history(apps, schema_editor):
    ProtectiveAction = apps.get_model("policies", "ProtectiveAction")
    for action in ProtectiveAction.objects.filter(action_id__isnull=True).only("pk", "action", "enabled"):
        goal = GOAL_OF_ACTION.get(action.action, "trading_disabled") if action.enabled else "none"
        if action.action == "none" and action.enabled:
            goal = "trading_disabled"
        ProtectiveAction.objects.filter(pk=action.pk).update(action_id=uuid.uuid4(), goal=goal)
    ProtectiveAction.objects.filter(goal_met_at__isnull=True).update(
        goal_met_at=models.functions.Coalesce(F("execution_timestamp"), F("created_at"))
    )


class Migration(migrations.Migration):
    dependencies = [("policies", "0005_indexes_for_panel_filters")]

    operations = [
        migrations.AddField("protectiveaction", "action_id", models.UUIDField(null=True, editable=False)),
        migrations.AddField(
            "protectiveaction",
            "goal",
            models.CharField(
                choices=[
                    ("position_closed", "Position Closed"),
                    ("order_cancelled", "Order Cancelled"),
                    ("account_flat", "account flat (no positions, no pending orders)"),
                    ("trading_disabled", "Trading Disabled"),
                    ("none", "none (recorded only)"),
                ],
                default="none",
                max_length=20,
            ),
        ),
        migrations.AddField(
            "protectiveaction",
            "goal_met_at",
            models.DateTimeField(blank=True, help_text="When MT5 showed the goal holding.", null=True),
        ),
        migrations.AddField(
            "protectiveaction",
            "attempt_count",
            models.PositiveIntegerField(default=0, help_text="Attempts raised (each one or two commands)."),
        ),
        migrations.AddField(
            "protectiveaction",
            "attempt_commands",
            models.JSONField(blank=True, default=list, help_text="The latest attempt's command ids (pk)."),
        ),
        migrations.AddField(
            "protectiveaction",
            "attempt_ended_at",
            models.DateTimeField(blank=True, help_text="When the latest attempt finished.", null=True),
        ),
        migrations.AddField(
            "protectiveaction",
            "next_attempt_at",
            models.DateTimeField(blank=True, help_text="No new attempt before this.", null=True),
        ),
        migrations.AddField(
            "protectiveaction",
            "report_sequence",
            models.PositiveIntegerField(default=0, help_text="Reports written to the outbox so far."),
        ),
        migrations.AddField(
            "protectiveaction",
            "reported_status",
            models.CharField(blank=True, help_text="The status of the latest report.", max_length=16),
        ),
        migrations.AddField(
            "protectiveaction",
            "alerted_at",
            models.DateTimeField(blank=True, help_text="When operators were told the goal is late.", null=True),
        ),
        migrations.RunPython(existing_actions_are_history, migrations.RunPython.noop),
        migrations.AlterField(
            "protectiveaction",
            "action_id",
            models.UUIDField(default=uuid.uuid4, editable=False, unique=True),
        ),
        migrations.AddIndex(
            "protectiveaction",
            models.Index(
                condition=Q(goal_met_at__isnull=True) & ~Q(goal="none"),
                fields=["account"],
                name="protective_action_pursued",
            ),
        ),
    ]
