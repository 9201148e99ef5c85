from django.apps import AppConfig


class CampaignsConfig(AppConfig):
    name = "kizuna.campaigns"
    label = "campaigns"
    verbose_name = "配信"
