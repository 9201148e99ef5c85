"""Admin: the shop's analytics settings (editable by admins) and the runs (read-only).

Snapshot rows are not listed: they are millions of rows that pages and the API read through
kizuna.analytics.selectors.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from kizuna.analytics.models import AnalyticsRun, AnalyticsSettings
from kizuna.core.admin_base import ReadOnlyAdmin


@admin.register(AnalyticsSettings)
class AnalyticsSettingsAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    fieldsets = (
        ("RFM", {"fields": ("rfm_method", "recency_days", "frequency_counts", "monetary_yen")}),
        (
            "CPM",
            {
                "fields": (
                    "cpm_lapse_days",
                    "cpm_toddler_tenure_days",
                    "cpm_loyal_tenure_days",
                    "cpm_amount_yen",
                )
            },
        ),
        ("リピート指標", {"fields": ("windows_days",)}),
        ("予測", {"fields": ("prediction_model", "prediction_horizon_days")}),
        ("実行", {"fields": ("nightly_backend", "keep_customer_runs")}),
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        # One row per shop: created with the defaults on first use, then only edited.
        return not AnalyticsSettings.objects.exists()

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(AnalyticsRun)
class AnalyticsRunAdmin(ReadOnlyAdmin):
    list_display = ("id", "as_of", "status", "backend", "trigger", "customers", "finished_at")
    list_filter = ("status", "backend")
