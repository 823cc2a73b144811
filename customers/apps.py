from django.apps import AppConfig


class CustomersConfig(AppConfig):
    name = "customers"
    verbose_name = "Customers and access"

    def ready(self) -> None:
        from . import checks, receivers  # noqa: F401  (connects signals, registers checks)
