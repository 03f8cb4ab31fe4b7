"""Every ModelAdmin of the bridge, one module per model or area; `base` holds what they share.

Django's admin autodiscovery imports `<app>.admin` of every installed app that has one. Only the
panel has one, and importing it registers the models of every app. The order of the modules
below changes nothing: the sidebar is listed in `panel.navigation`, the admin's own app lists are
sorted by name, and each model's URLs sit under their own prefix. What has to come first is
what autodiscovery already imported before the panel, the last installed app: the admins of
django.contrib.auth and django-q2, which `users` and `tasks` replace.
"""

from panel.admin import (  # noqa: F401 (imported to register)
    accounts,
    alerts,
    callbacks,
    commands,
    execution,
    kill_switches,
    payloads,
    policy_snapshots,
    protective_actions,
    tasks,
    tenancy,
    terminals,
    users,
)
