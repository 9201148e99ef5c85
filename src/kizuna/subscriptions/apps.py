from django.apps import AppConfig


class SubscriptionsConfig(AppConfig):
    name = "kizuna.subscriptions"
    label = "subscriptions"
    verbose_name = "定期購入"
