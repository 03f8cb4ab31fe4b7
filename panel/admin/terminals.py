"""The configured MT5 terminals and the accounts pinned to each, for superusers (as ``manage.py terminals``).

A terminal belongs to no tenant, so tenant-scoped staff never see it (panel.scoping); no role
holds its permissions. It never shows a password: only the name of the environment variable
that holds one, or that the terminal's saved login is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypedDict

from django import forms
from django.contrib import admin
from django.db.models import Count, QuerySet
from django.http import HttpRequest
from unfold.admin import TabularInline
from unfold.decorators import display

from execution.models import Terminal, TerminalAccount, TerminalKind
from execution.owners import live_owners
from execution.terminals import (
    TerminalError,
    check_name,
    check_password_env,
    naming_of,
    password_source,
    symbol_naming,
)
from panel.admin.base import ScopedAdmin

if TYPE_CHECKING:
    from django_stubs_ext import WithAnnotations


class _AccountCount(TypedDict):
    account_count: int


class TerminalForm(forms.ModelForm):
    class Meta:
        model = Terminal
        fields = (
            "name",
            "kind",
            "path",
            "host",
            "port",
            "password_env",
            "symbol_suffix",
            "symbol_prefix",
            "symbol_names",
            "notes",
        )

    def clean_name(self) -> str:
        name: str = self.cleaned_data["name"]
        if self.instance.pk is None or name != self.instance.name:
            try:
                check_name(name)
            except TerminalError as exc:
                raise forms.ValidationError(str(exc)) from exc
        return name

    def clean_password_env(self) -> str:
        value: str = self.cleaned_data["password_env"].strip()
        try:
            return check_password_env(value)
        except TerminalError as exc:
            raise forms.ValidationError(str(exc)) from exc

    def clean(self) -> dict[str, Any]:
        data: dict[str, Any] = super().clean() or {}
        if data.get("kind") == TerminalKind.MT5LINUX:
            if not data.get("host") or not data.get("port"):
                raise forms.ValidationError("An mt5linux terminal needs a host and a port.")
        elif not data.get("path"):
            raise forms.ValidationError("A path terminal needs the path of its terminal64.exe.")
        try:
            naming = symbol_naming(
                suffix=data.get("symbol_suffix") or "",
                prefix=data.get("symbol_prefix") or "",
                names=data.get("symbol_names") or "",
            )
        except TerminalError as exc:
            raise forms.ValidationError(str(exc)) from exc
        data["symbol_suffix"], data["symbol_prefix"] = naming.suffix, naming.prefix
        data["symbol_names"] = naming.names_text()
        return data


class TerminalAccountInline(TabularInline):
    model = TerminalAccount
    fields = ("login", "server")
    extra = 0
    verbose_name_plural = "pinned accounts (each account is pinned to exactly one terminal)"


@admin.register(Terminal)
class TerminalAdmin(ScopedAdmin[Terminal]):
    form = TerminalForm
    inlines = (TerminalAccountInline,)
    list_display = ("name", "kind", "where", "accounts", "driven_by", "symbols", "password", "created_at")
    list_filter = ("kind",)
    search_fields = ("name", "path", "host", "accounts__login")
    readonly_fields = ("created_at",)
    ordering = ("name",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Terminal]:
        return super().get_queryset(request).annotate(account_count=Count("accounts"))

    @display(description="where")
    def where(self, obj: Terminal) -> str:
        if obj.kind == TerminalKind.MT5LINUX:
            return f"{obj.host}:{obj.port}" + (f" {obj.path}" if obj.path else "")
        return obj.path

    @display(description="accounts", ordering="account_count")
    def accounts(self, obj: WithAnnotations[Terminal, _AccountCount]) -> int:
        return obj.account_count

    @display(description="driven by")
    def driven_by(self, obj: Terminal) -> str:
        """The process holding the terminal's lease (execution.owners), or why nobody does."""
        owner = live_owners([obj.name]).get(obj.name)
        if owner is None:
            return "nobody (is the terminal host running?)"
        _, host, pid = owner
        return f"{host} pid {pid}"

    @display(description="symbols")
    def symbols(self, obj: Terminal) -> str:
        return naming_of(obj).describe()

    @display(description="password")
    def password(self, obj: Terminal) -> str:
        return password_source(obj)
