from django.apps import AppConfig


class BillingConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "billing"
    verbose_name = "Billing"

    def ready(self) -> None:
        from routing.registry_file import model_extension_register
        from routing.signals import registry_models_connect

        from .models import BodyStorageRule, Budget, Price
        from .registry_prices import PriceInRegistryFile

        registry_models_connect(Price, Budget, BodyStorageRule)  # in the metering part of the registry snapshot
        model_extension_register(PriceInRegistryFile())
