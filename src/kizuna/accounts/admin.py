"""Staff accounts in Django admin: where a 管理者 adds staff, changes roles, disables leavers
and resets passwords (docs/security.md, "Staff accounts")."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.contrib.auth.admin import UserAdmin
from django.contrib.auth.forms import UserChangeForm
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q
from django.http import HttpRequest, HttpResponse

from kizuna.accounts.models import Role, User
from kizuna.core.audit import Actor, audit_record, diff

LAST_ADMIN_MESSAGE = (
    "有効な管理者が1人もいなくなるため、この変更はできません。"
    "先にほかのスタッフを管理者にしてから変更してください。"
)
# The fields whose change leaves an audit row (the password is recorded as changed, never
# its value or hash).
AUDITED_FIELDS = ("username", "role", "is_active", "is_superuser")
PASSWORD_CHANGED = {"password": [None, "changed"]}


def _is_active_admin(*, is_active: bool, role: str, is_superuser: bool) -> bool:
    return is_active and (role == Role.ADMIN or is_superuser)


class StaffChangeForm(UserChangeForm):  # type: ignore[type-arg]
    def clean(self) -> dict[str, Any]:
        super().clean()
        cleaned = self.cleaned_data
        user = self.instance

        def after(name: str) -> Any:
            return cleaned.get(name, getattr(user, name))

        stays_admin = _is_active_admin(
            is_active=after("is_active"), role=after("role"), is_superuser=after("is_superuser")
        )
        if not stays_admin:
            # Locked (until the admin's save commits) so that two admins lowering each other
            # at the same moment cannot both pass this check.
            with transaction.atomic():
                active_admins = list(
                    User.objects.select_for_update()
                    .filter(Q(role=Role.ADMIN) | Q(is_superuser=True), is_active=True)
                    .order_by("pk")
                    .values_list("pk", flat=True)
                )
            if active_admins == [user.pk]:
                raise ValidationError(LAST_ADMIN_MESSAGE)
        return cleaned


@admin.register(User)
class StaffAdmin(UserAdmin):  # type: ignore[type-arg]
    form = StaffChangeForm
    list_display = ("username", "last_name", "first_name", "role", "is_active", "last_login")
    list_filter = ("role", "is_active")
    fieldsets = (*UserAdmin.fieldsets, ("役割", {"fields": ("role",)}))  # type: ignore[misc]
    add_fieldsets = (*UserAdmin.add_fieldsets, ("役割", {"fields": ("role",)}))

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        fieldsets = super().get_fieldsets(request, obj)
        if obj is None or request.user.is_superuser:
            return fieldsets
        # A 管理者 who is not a superuser cannot hand out the superuser flag or Django's own
        # permissions (which reach beyond staff accounts); is_staff follows the role.
        return tuple(
            (name, {**options, "fields": ("is_active",)})
            if "is_superuser" in options["fields"]
            else (name, options)
            for name, options in fieldsets
        )

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # A superuser's account (its password above all) is changed by a superuser only.
        if obj is not None and obj.is_superuser and not request.user.is_superuser:
            return False
        return super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Leavers are disabled (有効 unticked), never deleted: their name stays on the records.
        return False

    def save_model(self, request: HttpRequest, obj: User, form: Any, change: bool) -> None:
        old = User.objects.filter(pk=obj.pk).values(*AUDITED_FIELDS).first() if change else None
        super().save_model(request, obj, form, change)
        new = {name: getattr(obj, name) for name in AUDITED_FIELDS}
        changes = diff(old or {}, new)
        if old is not None and not changes:
            return
        audit_record(
            actor=Actor.of(request.user),
            action="user.update" if change else "user.create",
            instance=obj,
            customer_id=None,
            changes=changes,
        )

    def user_change_password(
        self, request: HttpRequest, id: str, form_url: str = ""
    ) -> HttpResponse:
        with transaction.atomic():
            user = self.get_object(request, unquote(id))
            before = user.password if user is not None else None
            response: HttpResponse = super().user_change_password(request, id, form_url)
            if user is not None:
                user.refresh_from_db(fields=["password"])
                if user.password != before:
                    audit_record(
                        actor=Actor.of(request.user),
                        action="user.update",
                        instance=user,
                        customer_id=None,
                        changes=PASSWORD_CHANGED,
                    )
        return response
