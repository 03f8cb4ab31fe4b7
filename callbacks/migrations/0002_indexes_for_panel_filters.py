"""The indexes behind the panel's searches and newest-first lists of the callback outbox, now in the models' state.

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
        "callbackdelivery",
        models.Index(fields=["idempotency_key"], name="panel_cb_idem_key"),
        "callbacks_callbackdelivery",
        '"idempotency_key"',
    ),
    (
        "callbackdelivery",
        models.Index(fields=["correlation_id"], name="panel_cb_correlation"),
        "callbacks_callbackdelivery",
        '"correlation_id"',
    ),
    (
        "callbackdelivery",
        models.Index(fields=["request_type", "-created_at"], name="panel_cb_type_recent"),
        "callbacks_callbackdelivery",
        '"request_type", "created_at" DESC',
    ),
    (
        "callbackattempt",
        models.Index(fields=["-at"], name="panel_cbattempt_recent"),
        "callbacks_callbackattempt",
        '"at" DESC',
    ),
]


class Migration(migrations.Migration):
    dependencies = [("callbacks", "0001_initial")]

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
