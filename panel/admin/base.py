"""What every admin of the panel shares: tenant scoping, big-table settings, read-only defaults, search and
display helpers."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from django.contrib import admin
from django.db.models import Model, QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe
from django.utils.timesince import timesince
from unfold.admin import ModelAdmin
from unfold.contrib.filters.admin import DropdownFilter
from unfold.decorators import display
from unfold.paginator import InfinitePaginator

from panel.formatting import money, utc
from panel.scoping import TENANT_LOOKUPS, TOKEN_LABEL, is_tenant_owned, scope_queryset, visible_tenants

if TYPE_CHECKING:
    # django-unfold ships no type information, so its ModelAdmin is Any to the checker. It subclasses Django's
    # ModelAdmin, which django-stubs declares generic in the model: ScopedAdmin names that one as a second base for
    # the checker. At run time Django's ModelAdmin is not subscriptable (django-stubs-ext is a dev dependency, and
    # unpatched), so the second base is Generic there: the classes and their MRO are what they were.
    from django.contrib.admin import ModelAdmin as TypedModelAdmin
else:
    from typing import Generic as TypedModelAdmin

_ModelT = TypeVar("_ModelT", bound=Model)

# Colours of unfold's label badges, by the values operators scan for on a bad day.
STATE_LABELS: dict[str, str] = {
    "received": "info",
    "queued": "info",
    "executing": "warning",
    "succeeded": "success",
    "partially_succeeded": "warning",
    "failed": "danger",
    "rejected": "danger",
    "expired": "danger",
    "cancelled": "danger",
    # protective actions and callback deliveries
    "pending": "info",
    "delivering": "warning",
    "delivered": "success",
    "dead": "danger",
    "success": "success",
    "partial": "warning",
    "skipped": "info",
    "fast": "warning",
    "normal": "info",
}


def tenant_lookup_of(model: type[Model]) -> str:
    label = model._meta.label_lower
    if label == TOKEN_LABEL:
        return "tenants"
    return TENANT_LOOKUPS[label]


class TenantFilter(DropdownFilter):
    """Filter by tenant, offering only the tenants the user may see (never a list of every tenant)."""

    title = "tenant"
    parameter_name = "tenant"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]) -> list[tuple[str, str]]:
        return [(str(pk), tenant_id) for pk, tenant_id in visible_tenants(request.user).values_list("pk", "tenant_id")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if not value:
            return queryset
        if not value.isdigit():
            return queryset.none()
        return queryset.filter(**{tenant_lookup_of(queryset.model): int(value)})


class ScopedAdmin(ModelAdmin, TypedModelAdmin[_ModelT]):
    """A ModelAdmin that shows a staff user only the rows of their tenants, in lists, details and choices."""

    def get_queryset(self, request: HttpRequest) -> QuerySet[_ModelT]:
        return scope_queryset(super().get_queryset(request), request.user)

    def get_field_queryset(self, db: str | None, db_field: Any, request: HttpRequest) -> QuerySet[Any] | None:
        # Select boxes and M2M pickers of forms list related rows: those must be scoped as well.
        queryset = super().get_field_queryset(db, db_field, request)
        related = db_field.remote_field.model
        if is_tenant_owned(related):
            if queryset is None:
                queryset = related._default_manager.using(db).all()
            queryset = scope_queryset(queryset, request.user)
        return queryset

    @admin.action(description="Export selected rows as CSV", permissions=["view"])
    def export_csv(self, request: HttpRequest, queryset: QuerySet[Any]) -> HttpResponse:
        """The queryset comes from the scoped changelist, so an export never holds another tenant's row."""
        fields: Iterable[str] = getattr(self, "export_fields", None) or [
            f.name for f in self.model._meta.concrete_fields
        ]
        response = HttpResponse(content_type="text/csv")
        response["Content-Disposition"] = f'attachment; filename="{self.model._meta.model_name}s.csv"'
        writer = csv.writer(response)
        writer.writerow(fields)
        for row in queryset.values_list(*fields).iterator(chunk_size=2000):
            writer.writerow(["" if value is None else _csv_value(value) for value in row])
        return response


def _csv_value(value: Any) -> str:
    text = json.dumps(value, default=str) if isinstance(value, dict | list) else str(value)
    # A cell starting with = + - @ is a formula in a spreadsheet: quote it so it stays text.
    return f"'{text}" if text[:1] in ("=", "+", "-", "@") else text


class ReadOnlyMixin:
    """Evidence is never edited or deleted from the panel: rows change only through the bridge's own paths."""

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False


class BigTableMixin:
    """Tables that grow without bound: no COUNT(*) at all, newest first, a page at a time."""

    show_full_result_count = False
    paginator = InfinitePaginator
    list_per_page = 50
    # "Select all N" and "Show counts" would both count the whole table: actions apply to the page.
    list_disable_select_all = True
    show_facets = admin.ShowFacets.NEVER


def search_by_login(queryset: QuerySet[_ModelT], search_term: str, field: str) -> QuerySet[_ModelT] | None:
    """An account login typed in the search box, matched exactly on the indexed integer column."""
    term = search_term.strip()
    return queryset.filter(**{field: int(term)}) if term.isdigit() and len(term) < 19 else None


def pretty_json(value: Any) -> SafeString:
    if value is None or value == "":
        return mark_safe('<span class="text-base-400">—</span>')
    text = json.dumps(value, indent=2, ensure_ascii=False, default=str)
    return format_html('<pre class="panel-json">{}</pre>', text)


def age(moment: datetime | None) -> str:
    if moment is None:
        return "—"
    seconds = (timezone.now() - moment).total_seconds()
    if seconds < 60:
        return f"{max(int(seconds), 0)}s"
    return timesince(moment, depth=1)


def admin_link(obj: Model | None, text: str | None = None) -> SafeString | str:
    """A link to the object's change page, or its plain text when it has no admin."""
    if obj is None:
        return "—"
    try:
        url = reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_change", args=[obj.pk])
    except NoReverseMatch:
        return text or str(obj)
    return format_html('<a class="text-primary-600 underline" href="{}">{}</a>', url, text or str(obj))


def changelist_url(model: type[Model], **params: Any) -> str:
    from urllib.parse import urlencode

    url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
    return f"{url}?{urlencode(params)}" if params else url


def confirm_then(
    model_admin: admin.ModelAdmin[Any],
    request: HttpRequest,
    *,
    obj: Model,
    title: str,
    message: str,
    button: str,
    run: Callable[[], HttpResponse],
) -> HttpResponse:
    """A detail action that changes state: GET asks (so a link can never act), POST with CSRF does."""
    from django.template.response import TemplateResponse

    if request.method == "POST":
        return run()
    context = {
        **model_admin.admin_site.each_context(request),
        "title": title,
        "message": message,
        "button": button,
        "object": obj,
        "opts": model_admin.model._meta,
        "back_url": reverse(
            f"admin:{obj._meta.app_label}_{obj._meta.model_name}_change",
            args=[obj.pk],
            current_app=model_admin.admin_site.name,
        ),
    }
    return TemplateResponse(request, "panel/confirm.html", context)


def _cell(value: Any) -> Any:
    if value is None:
        return "—"
    return utc(value) if isinstance(value, datetime) else value


def table_html(headers: list[str], rows: list[list[Any]]) -> SafeString:
    """A plain table for readonly detail fields (values are escaped unless already safe)."""
    from django.utils.html import format_html_join

    head = format_html_join("", "<th>{}</th>", ((h,) for h in headers))
    body = format_html_join(
        "",
        "<tr>{}</tr>",
        ((format_html_join("", "<td>{}</td>", ((_cell(cell),) for cell in row)),) for row in rows),
    )
    return format_html(
        '<div class="panel-table-wrap"><table class="panel-table">'
        "<thead><tr>{}</tr></thead><tbody>{}</tbody></table></div>",
        head,
        body,
    )


def money_column(field: str, description: str | None = None, *, account: str = "account") -> Callable[[Any, Any], str]:
    """A list or detail column showing a money field in its account's currency digits (never 8 decimals)."""

    @display(description=description or field.replace("_", " "))
    def column(model_admin: Any, obj: Any) -> str:
        return money(getattr(obj, field), getattr(obj, account, None))

    return column
