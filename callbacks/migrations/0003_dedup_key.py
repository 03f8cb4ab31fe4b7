"""A callback's identity is minted when its row is written; the outbox de-duplicates on dedup_key.

Before, callers passed the idempotency key (command-result-<pk>, protective-action-<pk>) and the
outbox was unique on (tenant, idempotency_key). A key made of a local row number can come back in
a rebuilt database, a restored backup or a second bridge reporting to the same Laravel, so
`callback_enqueue` now mints idempotency_key (a UUID) itself and callers pass a local dedup_key.

Rows written earlier keep the idempotency_key Laravel has seen (a retry repeats it exactly) and
get it as their dedup_key too.
"""

from django.db import migrations, models
from django.db.models import F


def copy_keys(apps, schema_editor):
    delivery = apps.get_model("callbacks", "CallbackDelivery")
    delivery.objects.update(dedup_key=F("idempotency_key"))


class Migration(migrations.Migration):
    dependencies = [("callbacks", "0002_indexes_for_panel_filters")]

    operations = [
        migrations.AddField(
            model_name="callbackdelivery",
            name="dedup_key",
            field=models.CharField(
                default="",
                help_text="The bridge's own de-duplication key of the event (e.g. command-result:<pk>).",
                max_length=255,
            ),
            preserve_default=False,
        ),
        migrations.RunPython(copy_keys, migrations.RunPython.noop, elidable=True),
        migrations.AlterField(
            model_name="callbackdelivery",
            name="idempotency_key",
            field=models.CharField(
                help_text="meta.idempotency_key and X-Idempotency-Key: a UUID minted at enqueue; Laravel de-duplicates on it.",
                max_length=255,
            ),
        ),
        migrations.AddConstraint(
            model_name="callbackdelivery",
            constraint=models.UniqueConstraint(fields=("tenant", "dedup_key"), name="callback_tenant_dedup_unique"),
        ),
    ]
