from pathlib import Path

from django.core.management.base import BaseCommand

from routing.models import ModelEndpoint, Provider, Route
from routing.registry_file import registry_file_parse, registry_import

DEMO_REGISTRY = Path(__file__).resolve().parents[2] / "demo_registry.yaml"


class Command(BaseCommand):
    help = (
        "Fill an empty registry with the bundled demo registry (real providers, prices and routes, plus the "
        "offline demo model). A registry that has any provider, model or route is left as it is, so that "
        "`make run` never undoes an edit made in the admin."
    )

    def handle(self, *args, **options):
        if Provider.objects.exists() or ModelEndpoint.objects.exists() or Route.objects.exists():
            self.stdout.write("demo registry: 0 created, 0 updated (the registry is not empty: it is left as it is)")
            return
        summary = registry_import(data=registry_file_parse(DEMO_REGISTRY.read_text(encoding="utf-8")))
        self.stdout.write(f"demo registry: {len(summary.created)} created, {len(summary.updated)} updated")
