"""Each account's policy history, every snapshot with its difference from the previous version."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.safestring import SafeString
from unfold.contrib.filters.admin import RangeDateTimeFilter
from unfold.decorators import display

from panel.admin.base import (
    BigTableMixin,
    ReadOnlyMixin,
    ScopedAdmin,
    TenantFilter,
    admin_link,
    pretty_json,
    search_by_login,
    table_html,
)
from policies.models import PolicySnapshot


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key, inner in value.items():
            flat.update(_flatten(inner, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): value}


def policy_diff(previous: dict[str, Any] | None, current: dict[str, Any]) -> list[tuple[str, Any, Any, str]]:
    """(field, before, after, change) for every field that differs; nested keys are dotted."""
    before, after = _flatten(previous or {}), _flatten(current)
    rows = []
    for key in sorted(before.keys() | after.keys()):
        if key not in before:
            rows.append((key, None, after[key], "added"))
        elif key not in after:
            rows.append((key, before[key], None, "removed"))
        elif before[key] != after[key]:
            rows.append((key, before[key], after[key], "changed"))
    return rows


@admin.register(PolicySnapshot)
class PolicySnapshotAdmin(BigTableMixin, ReadOnlyMixin, ScopedAdmin[PolicySnapshot]):
    list_display = ("account", "policy_version", "is_current", "tenant", "received_at", "idempotency_key")
    list_select_related = ("account", "account__tenant")
    list_filter = (TenantFilter, ("received_at", RangeDateTimeFilter))
    list_filter_submit = True
    search_fields = ("idempotency_key__exact", "correlation_id__exact")
    search_help_text = "Account login (exact), idempotency key or correlation id."
    ordering = ("-received_at",)
    sortable_by = ("received_at", "policy_version")
    readonly_fields = (
        "account",
        "policy_version",
        "is_current",
        "received_at",
        "correlation_id",
        "idempotency_key",
        "fingerprint",
        "difference",
        "payload_json",
        "envelope_json",
    )
    fieldsets = (
        (
            "Snapshot",
            {
                "fields": (
                    "account",
                    "policy_version",
                    "is_current",
                    "received_at",
                    "correlation_id",
                    "idempotency_key",
                    "fingerprint",
                )
            },
        ),
        ("Difference from the previous version", {"fields": ("difference",)}),
        ("Payload (timestamps in UTC)", {"fields": ("payload_json",)}),
        ("Envelope as received", {"fields": ("envelope_json",)}),
    )

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[PolicySnapshot], search_term: str
    ) -> tuple[QuerySet[PolicySnapshot], bool]:
        by_login = search_by_login(queryset, search_term, "account__login")
        if by_login is not None:
            return by_login, False
        return super().get_search_results(request, queryset, search_term)

    @display(description="tenant")
    def tenant(self, obj: PolicySnapshot) -> str:
        return str(obj.account.tenant)

    @display(description="current", boolean=True)
    def is_current(self, obj: PolicySnapshot) -> bool:
        return obj.account.current_policy_id == obj.pk

    @display(description="difference")
    def difference(self, obj: PolicySnapshot) -> SafeString | str:
        previous = (
            PolicySnapshot.objects.filter(account_id=obj.account_id, policy_version__lt=obj.policy_version)
            .order_by("-policy_version")
            .first()
        )
        if previous is None:
            return "The first snapshot of this account: nothing to compare with."
        rows = policy_diff(previous.payload, obj.payload)
        if not rows:
            return format_html("Identical to {}.", admin_link(previous, f"version {previous.policy_version}"))
        header = format_html("Compared with {}:", admin_link(previous, f"version {previous.policy_version}"))
        table = table_html(
            ["field", f"v{previous.policy_version}", f"v{obj.policy_version}", "change"], [list(r) for r in rows]
        )
        return format_html("{}{}", header, table)

    @display(description="payload")
    def payload_json(self, obj: PolicySnapshot) -> SafeString:
        return pretty_json(obj.payload)

    @display(description="envelope")
    def envelope_json(self, obj: PolicySnapshot) -> SafeString:
        return pretty_json(obj.envelope)
