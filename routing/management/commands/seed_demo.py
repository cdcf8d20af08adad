from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

from routing.registry_file import registry_file_parse, registry_import

DEMO_REGISTRY = Path(__file__).resolve().parents[2] / "demo_registry.yaml"


class Command(BaseCommand):
    help = (
        "Load the bundled demo registry (idempotent): real providers, prices and routes, plus the offline demo model."
    )

    def handle(self, *args, **options):
        text = DEMO_REGISTRY.read_text(encoding="utf-8").replace(
            "{public_url}", settings.ROUTERWEB_PUBLIC_URL.rstrip("/")
        )
        summary = registry_import(data=registry_file_parse(text))
        self.stdout.write(f"demo registry: {len(summary.created)} created, {len(summary.updated)} updated")
