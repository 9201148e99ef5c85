from django.apps import AppConfig


class CustomersConfig(AppConfig):
    name = "kizuna.customers"
    label = "customers"
    verbose_name = "顧客"
