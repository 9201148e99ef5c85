from django.apps import AppConfig


class AutomationConfig(AppConfig):
    name = "kizuna.campaigns.automation"
    label = "automation"
    verbose_name = "シナリオ・セグメント"
