from django.contrib import admin

from kizuna.core.admin_base import ReadOnlyAdmin
from kizuna.support.models import Contact


@admin.register(Contact)
class ContactAdmin(ReadOnlyAdmin):
    list_display = ("customer_id", "occurred_at", "channel", "direction", "summary")
    list_filter = ("channel", "direction")
    show_full_result_count = False
