from django.apps import AppConfig


class LoyaltyConfig(AppConfig):
    name = "kizuna.loyalty"
    label = "loyalty"
    verbose_name = "ポイント"
