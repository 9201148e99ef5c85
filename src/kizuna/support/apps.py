from django.apps import AppConfig


class SupportConfig(AppConfig):
    name = "kizuna.support"
    label = "support"
    verbose_name = "問い合わせ"
