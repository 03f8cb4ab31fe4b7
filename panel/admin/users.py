"""Staff tenant scopes, and the themed user and group admins with the scope on the user's page."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.contrib.auth.admin import GroupAdmin as BaseGroupAdmin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.contrib.auth.models import Group, User
from django.db.models import QuerySet
from django.http import HttpRequest
from unfold.admin import StackedInline
from unfold.decorators import display
from unfold.forms import AdminPasswordChangeForm, UserChangeForm, UserCreationForm

from panel.admin.base import ScopedAdmin
from panel.models import StaffScope


class StaffScopeForm(forms.ModelForm):
    class Meta:
        model = StaffScope
        fields = ("user", "all_tenants", "tenants")

    def clean(self) -> dict[str, Any]:
        # ModelForm.clean() returns self.cleaned_data (the stubs allow None, what a Form.clean() override may return).
        super().clean()
        cleaned = self.cleaned_data
        if cleaned.get("all_tenants") and cleaned.get("tenants"):
            raise forms.ValidationError("Choose either every tenant or a list of tenants, not both.")
        return cleaned


@admin.register(StaffScope)
class StaffScopeAdmin(ScopedAdmin[StaffScope]):
    form = StaffScopeForm
    list_display = ("user", "all_tenants", "tenant_list", "updated_at")
    list_select_related = ("user",)
    search_fields = ("user__username",)
    filter_horizontal = ("tenants",)
    autocomplete_fields = ("user",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[StaffScope]:
        return super().get_queryset(request).prefetch_related("tenants")

    @display(description="tenants")
    def tenant_list(self, obj: StaffScope) -> str:
        return "every tenant" if obj.all_tenants else ", ".join(t.tenant_id for t in obj.tenants.all()) or "none"

    def save_model(self, request: HttpRequest, obj: StaffScope, form: forms.ModelForm, change: bool) -> None:
        from django.utils import timezone

        obj.updated_at = timezone.now()
        super().save_model(request, obj, form, change)


class StaffScopeInline(StackedInline):
    model = StaffScope
    form = StaffScopeForm
    fields = ("all_tenants", "tenants")
    filter_horizontal = ("tenants",)
    can_delete = True
    verbose_name = "tenant scope (staff without one see no tenant's rows)"
    max_num = 1


admin.site.unregister(User)
admin.site.unregister(Group)


@admin.register(User)
class UserAdmin(BaseUserAdmin, ScopedAdmin[User]):
    form = UserChangeForm
    add_form = UserCreationForm
    change_password_form = AdminPasswordChangeForm
    inlines = (StaffScopeInline,)
    list_display = ("username", "email", "is_staff", "is_superuser", "group_list", "is_active", "last_login")

    def get_queryset(self, request: HttpRequest) -> QuerySet[User]:
        return super().get_queryset(request).prefetch_related("groups")

    @display(description="groups")
    def group_list(self, obj: User) -> str:
        return ", ".join(group.name for group in obj.groups.all())


@admin.register(Group)
class GroupAdmin(BaseGroupAdmin, ScopedAdmin[Group]):
    pass
