"""Empty now: it dropped two command indexes panel 0003 used to create, and both moved to the commands app.

It dropped `panel_cmd_lane_recent` and `panel_cmd_type_recent` (a lane or command type filter
reads `panel_cmd_recent` newest first and stops after a page; an index of its own cost two more
B-tree inserts on every accepted command). panel 0003 is empty now, so a new database never gets
them; commands 0005 creates the command indexes that stayed and drops these two where a database
applied panel 0003 but never this one. The file stays because existing databases recorded it.
"""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("panel", "0003_indexes_for_panel_filters")]

    operations = []
