from django.contrib import admin

from kizuna.core.admin_base import ReadOnlyAdmin
from kizuna.subscriptions.models import Subscription


@admin.register(Subscription)
class SubscriptionAdmin(ReadOnlyAdmin):
    list_display = ("id", "customer_id", "product", "status", "delivery_count", "next_delivery_on")
    list_filter = ("status", "product")
    show_full_result_count = False
