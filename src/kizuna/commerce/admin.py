from django.contrib import admin

from kizuna.commerce.models import Order, Product
from kizuna.core.admin_base import ReadOnlyAdmin


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("code", "name", "kind", "price", "is_active")
    list_filter = ("kind", "is_active")
    search_fields = ("code", "name")


@admin.register(Order)
class OrderAdmin(ReadOnlyAdmin):
    list_display = ("number", "customer_id", "ordered_at", "status", "total")
    list_filter = ("status", "channel")
    search_fields = ("=number",)
    show_full_result_count = False
