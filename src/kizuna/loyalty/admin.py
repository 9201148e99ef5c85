from django.contrib import admin

from kizuna.core.admin_base import ReadOnlyAdmin
from kizuna.loyalty.models import PointEntry


@admin.register(PointEntry)
class PointEntryAdmin(ReadOnlyAdmin):
    list_display = ("customer_id", "seq", "kind", "amount", "balance_after", "occurred_at")
    list_filter = ("kind",)
    show_full_result_count = False
