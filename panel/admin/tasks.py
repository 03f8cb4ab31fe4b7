"""django-q2's task tables, themed and shown only to users who see every tenant."""

from __future__ import annotations

from django.contrib import admin

from panel.admin.base import ScopedAdmin


def _rescope_django_q() -> None:
    """django-q2's task tables name commands of every tenant: themed, and shown only to all-tenant users."""
    from django_q import admin as q_admin
    from django_q.models import Failure, OrmQ, Schedule, Success

    for model, base in (
        (Schedule, q_admin.ScheduleAdmin),
        (Success, q_admin.TaskAdmin),
        (Failure, q_admin.FailAdmin),
        (OrmQ, q_admin.QueueAdmin),
    ):
        if admin.site.is_registered(model):
            admin.site.unregister(model)
            admin.site.register(model, type(base.__name__, (base, ScopedAdmin), {"show_full_result_count": False}))


_rescope_django_q()
