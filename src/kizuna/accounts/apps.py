from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "kizuna.accounts"
    label = "accounts"
    verbose_name = "スタッフ"
