"""Two command indexes cost more on every accepted command than they save the panel.

A lane (two values) or a command type (eight, all common) filter reads `panel_cmd_recent` newest
first and stops after a page; an index of its own made each intake write two more B-tree inserts.
"""

from django.db import migrations

DROPPED = [
    ("panel_cmd_lane_recent", "commands_command", "lane, received_at DESC"),
    ("panel_cmd_type_recent", "commands_command", "command_type, received_at DESC"),
]


class Migration(migrations.Migration):
    dependencies = [("panel", "0003_indexes_for_panel_filters")]

    operations = [
        migrations.RunSQL(
            sql=f"DROP INDEX IF EXISTS {name}",
            reverse_sql=f"CREATE INDEX IF NOT EXISTS {name} ON {table} ({columns})",
        )
        for name, table, columns in DROPPED
    ]
