from django.contrib import admin

from kizuna.campaigns.models import DeliveryList, DeliverySettings, OutboxMessage, Suppression
from kizuna.core.admin_base import ReadOnlyAdmin

# Read-only: sending, suppressions and the rules change through the delivery page (配信状況),
# whose services write the audit trail.


@admin.register(OutboxMessage)
class OutboxMessageAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "customer_id",
        "channel",
        "sent_channel",
        "purpose",
        "status",
        "send_after",
        "sent_at",
        "reason",
    )
    list_filter = ("status", "channel", "purpose")
    search_fields = ("dedupe_key", "message_id")
    show_full_result_count = False


@admin.register(Suppression)
class SuppressionAdmin(ReadOnlyAdmin):
    list_display = ("kind", "address", "reason", "created_at", "created_by")
    list_filter = ("kind", "reason")
    search_fields = ("address",)


@admin.register(DeliveryList)
class DeliveryListAdmin(ReadOnlyAdmin):
    list_display = ("id", "channel", "created_at", "closed_at", "closed_by")
    list_filter = ("channel",)


@admin.register(DeliverySettings)
class DeliverySettingsAdmin(ReadOnlyAdmin):
    list_display = ("paused", "quiet_start", "quiet_end", "cap_messages", "cap_days", "updated_at")
