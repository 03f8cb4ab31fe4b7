"""Empty now: the indexes behind the panel's search boxes, filters and newest-first lists moved to their tables' apps.

This migration used to create them with raw SQL (`CREATE INDEX IF NOT EXISTS panel_…`) on the
commands, policies and callbacks tables. Those apps now declare them in their models'
Meta.indexes and create them in commands 0005, policies 0005 and callbacks 0002, with the same
names, columns and `IF NOT EXISTS`: a database that applied this migration keeps its indexes, and
a new database gets them from those apps. The file stays because existing databases recorded it.
"""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("panel", "0002_roles_and_example_payloads"),
        ("commands", "0002_cache_table_and_queue_index"),
        ("policies", "0003_risk_state_and_protective_actions"),
        ("callbacks", "0001_initial"),
    ]

    operations = []
