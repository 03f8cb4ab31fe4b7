"""The kill switch log: every switch used in the panel, by whom, why, in which environment, and what it raised."""

from __future__ import annotations

from django.contrib import admin
from django.utils.html import format_html_join
from django.utils.safestring import SafeString
from unfold.decorators import display

from commands.models import Command
from panel.admin.base import BigTableMixin, ReadOnlyMixin, ScopedAdmin, TenantFilter, admin_link
from panel.models import KillSwitchUse


@admin.register(KillSwitchUse)
class KillSwitchUseAdmin(BigTableMixin, ReadOnlyMixin, ScopedAdmin[KillSwitchUse]):
    list_display = ("used_at", "switch", "target", "username", "reason", "environment")
    list_select_related = ("tenant", "account")
    list_filter = (TenantFilter, "switch")
    search_fields = ("username",)
    search_help_text = "Who used it (exact user name)."
    ordering = ("-used_at", "-id")
    readonly_fields = ("used_at", "switch", "tenant", "account", "username", "reason", "environment", "raised")
    fields = readonly_fields

    @display(description="on")
    def target(self, obj: KillSwitchUse) -> str:
        return str(obj.account) if obj.account else f"tenant {obj.tenant.tenant_id}"

    @display(description="commands raised")
    def raised(self, obj: KillSwitchUse) -> SafeString | str:
        commands = Command.objects.filter(tenant_id=obj.tenant_id, command_id__in=obj.commands or [])
        if not commands:
            return "—"
        return format_html_join(
            "", "<div>{} · {}</div>", ((admin_link(c, c.command_id), c.state) for c in commands.order_by("pk"))
        )
