from pathlib import Path

from django.core.management.base import BaseCommand

from routing.registry_file import registry_export, registry_file_render


class Command(BaseCommand):
    help = "Export the registry as YAML, to FILE or to stdout."

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path, nargs="?")

    def handle(self, *args, file: Path | None = None, **options):
        text = registry_file_render(registry_export())
        if file is None:
            self.stdout.write(text, ending="")
        else:
            file.write_text(text, encoding="utf-8")
