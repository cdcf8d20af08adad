from django.apps import AppConfig


class RoutingConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "routing"
    verbose_name = "Routing registry"

    def ready(self) -> None:
        from .signals import connect_registry_signals

        connect_registry_signals()
