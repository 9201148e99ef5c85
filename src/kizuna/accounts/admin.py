from django.contrib import admin
from django.contrib.auth.admin import UserAdmin

from kizuna.accounts.models import User


@admin.register(User)
class StaffAdmin(UserAdmin):  # type: ignore[type-arg]
    list_display = ("username", "last_name", "first_name", "role", "is_active", "last_login")
    list_filter = ("role", "is_active")
    fieldsets = (*UserAdmin.fieldsets, ("役割", {"fields": ("role",)}))  # type: ignore[misc]
    add_fieldsets = (*UserAdmin.add_fieldsets, ("役割", {"fields": ("role",)}))
