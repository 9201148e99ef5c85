from django.apps import AppConfig


class CampaignsConfig(AppConfig):
    name = "kizuna.campaigns"
    label = "campaigns"
    verbose_name = "配信"

    def ready(self) -> None:
        from kizuna.campaigns import checks  # noqa: F401 - registers the deploy check
