from django.apps import AppConfig


class CommerceConfig(AppConfig):
    name = "kizuna.commerce"
    label = "commerce"
    verbose_name = "受注・商品"
