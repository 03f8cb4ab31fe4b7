from django.core.management import call_command
from django.db import migrations


def create_cache_table(apps, schema_editor):
    call_command("createcachetable", database=schema_editor.connection.alias, verbosity=0)


class Migration(migrations.Migration):
    """The shared cache table (django-q2 cluster heartbeats) and an index for the ORM broker.

    django-q2's ORM broker dequeues with `WHERE key = %s AND lock < now()` and no index: with a
    normal-lane backlog the fast lane's poll would scan it all, every few milliseconds.
    """

    dependencies = [("commands", "0001_initial"), ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more")]

    operations = [
        migrations.RunPython(create_cache_table, migrations.RunPython.noop),
        migrations.RunSQL(
            "CREATE INDEX IF NOT EXISTS bridge_ormq_key_lock ON django_q_ormq (key, lock)",
            "DROP INDEX IF EXISTS bridge_ormq_key_lock",
        ),
    ]
