"""The indexes behind the panel's searches and newest-first lists on the command tables, now in the models' state.

panel 0003 created them on these tables with raw SQL the model state did not know (and panel 0004
dropped two of them); they belong with the tables, so the models declare them in Meta.indexes and
this migration adds them to the state. On the database it runs `CREATE INDEX IF NOT EXISTS` with
the same names, columns and orderings, so a database that already has them (panel 0003 made them)
keeps them as they are and a new one gets them here (panel 0003 and 0004 are now empty).
"""

from django.db import migrations, models

# (model, index, table, columns): the columns exactly as panel 0003 created them.
INDEXES = [
    ("command", models.Index(fields=["command_id"], name="panel_cmd_command_id"), "commands_command", '"command_id"'),
    (
        "command",
        models.Index(fields=["correlation_id"], name="panel_cmd_correlation"),
        "commands_command",
        '"correlation_id"',
    ),
    (
        "command",
        models.Index(fields=["idempotency_key"], name="panel_cmd_idem_key"),
        "commands_command",
        '"idempotency_key"',
    ),
    (
        "command",
        models.Index(fields=["-received_at", "-id"], name="panel_cmd_recent"),
        "commands_command",
        '"received_at" DESC, "id" DESC',
    ),
    (
        "command",
        models.Index(fields=["state", "-received_at"], name="panel_cmd_state_recent"),
        "commands_command",
        '"state", "received_at" DESC',
    ),
    (
        "commandevent",
        models.Index(fields=["-at", "-id"], name="panel_event_recent"),
        "commands_commandevent",
        '"at" DESC, "id" DESC',
    ),
    ("idempotencyrecord", models.Index(fields=["key"], name="panel_idem_key"), "commands_idempotencyrecord", '"key"'),
    (
        "idempotencyrecord",
        models.Index(fields=["correlation_id"], name="panel_idem_correlation"),
        "commands_idempotencyrecord",
        '"correlation_id"',
    ),
    (
        "idempotencyrecord",
        models.Index(fields=["-created_at"], name="panel_idem_recent"),
        "commands_idempotencyrecord",
        '"created_at" DESC',
    ),
    (
        "idempotencyrecord",
        models.Index(fields=["tenant", "-created_at"], name="panel_idem_tenant_recent"),
        "commands_idempotencyrecord",
        '"tenant_id", "created_at" DESC',
    ),
]

# What panel 0004 dropped, for a database that applied panel 0003 but never 0004 (now empty).
DROPPED = ["panel_cmd_lane_recent", "panel_cmd_type_recent"]


class Migration(migrations.Migration):
    dependencies = [("commands", "0004_fewer_indexes_on_the_intake_path")]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.AddIndex(model_name=model, index=index) for model, index, _, _ in INDEXES],
            database_operations=[
                *(
                    migrations.RunSQL(
                        sql=f'CREATE INDEX IF NOT EXISTS "{index.name}" ON "{table}" ({columns})',
                        reverse_sql=f'DROP INDEX IF EXISTS "{index.name}"',
                    )
                    for _, index, table, columns in INDEXES
                ),
                *(
                    migrations.RunSQL(sql=f'DROP INDEX IF EXISTS "{name}"', reverse_sql=migrations.RunSQL.noop)
                    for name in DROPPED
                ),
            ],
        )
    ]
