"""Operators see alerts and acknowledge them: the roles are synced again now that alerts exist."""

from django.db import migrations


def sync(apps, schema_editor):
    from panel.roles import sync_roles

    sync_roles(apps)


class Migration(migrations.Migration):
    dependencies = [
        ("panel", "0004_fewer_indexes_on_the_intake_path"),
        ("alerts", "0001_initial"),
    ]

    operations = [migrations.RunPython(sync, migrations.RunPython.noop)]
