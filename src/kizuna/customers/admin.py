from django.contrib import admin

from kizuna.core.admin_base import ReadOnlyAdmin
from kizuna.customers.models import Consent, ConsentEvent, Customer, Identity, Tag


class IdentityInline(admin.TabularInline):  # type: ignore[type-arg]
    model = Identity
    extra = 0
    can_delete = False
    readonly_fields = ("kind", "value", "display_value", "source")


@admin.register(Customer)
class CustomerAdmin(ReadOnlyAdmin):
    list_display = ("id", "family_name", "given_name", "kana_key", "prefecture", "registered_at")
    list_filter = ("acquisition_channel", "member_status", "prefecture")
    search_fields = ("=id", "kana_key__startswith", "name_key__startswith")
    show_full_result_count = False  # a COUNT(*) per page is wasted at a million customers
    inlines = [IdentityInline]


@admin.register(Consent)
class ConsentAdmin(ReadOnlyAdmin):
    list_display = ("customer_id", "channel", "granted", "granted_at", "opted_out_at")
    list_filter = ("channel", "granted")
    show_full_result_count = False


@admin.register(ConsentEvent)
class ConsentEventAdmin(ReadOnlyAdmin):
    list_display = ("customer_id", "channel", "action", "at", "method", "wording_version")
    list_filter = ("channel", "action")
    show_full_result_count = False


@admin.register(Tag)
class TagAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    search_fields = ("name",)
