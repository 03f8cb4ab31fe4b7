"""The indexes behind the panel's newest-first lists of policies, risk samples and protective actions, now in the
models' state.

panel 0003 created them on these tables with raw SQL the model state did not know; they belong
with the tables, so the models declare them in Meta.indexes and this migration adds them to the
state. On the database it runs `CREATE INDEX IF NOT EXISTS` with the same names, columns and
orderings, so a database that already has them (panel 0003 made them) keeps them as they are and a
new one gets them here (panel 0003 is now empty).
"""

from django.db import migrations, models

# (model, index, table, columns): the columns exactly as panel 0003 created them.
INDEXES = [
    (
        "policysnapshot",
        models.Index(fields=["-received_at"], name="panel_policy_recent"),
        "policies_policysnapshot",
        '"received_at" DESC',
    ),
    ("risksample", models.Index(fields=["-at"], name="panel_sample_recent"), "policies_risksample", '"at" DESC'),
    (
        "protectiveaction",
        models.Index(fields=["-created_at"], name="panel_pa_recent"),
        "policies_protectiveaction",
        '"created_at" DESC',
    ),
    (
        "protectiveaction",
        models.Index(fields=["rule_key", "-created_at"], name="panel_pa_rule_recent"),
        "policies_protectiveaction",
        '"rule_key", "created_at" DESC',
    ),
]


class Migration(migrations.Migration):
    dependencies = [("policies", "0004_evaluate_requested")]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.AddIndex(model_name=model, index=index) for model, index, _, _ in INDEXES],
            database_operations=[
                migrations.RunSQL(
                    sql=f'CREATE INDEX IF NOT EXISTS "{index.name}" ON "{table}" ({columns})',
                    reverse_sql=f'DROP INDEX IF EXISTS "{index.name}"',
                )
                for _, index, table, columns in INDEXES
            ],
        )
    ]
