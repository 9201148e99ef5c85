from django.contrib import admin

from kizuna.core.admin_base import ReadOnlyAdmin
from kizuna.core.models import AuditLog


@admin.register(AuditLog)
class AuditLogAdmin(ReadOnlyAdmin):
    list_display = ("at", "actor_label", "action", "entity", "entity_id", "customer_id")
    list_filter = ("action", "entity")
    search_fields = ("actor_label", "entity_id")
    date_hierarchy = "at"
