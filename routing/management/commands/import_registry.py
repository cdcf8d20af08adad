from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from routing.registry_file import RegistryFileError, registry_file_parse, registry_import


class Command(BaseCommand):
    help = "Import providers, models, prices and routes from a YAML file (all or nothing, idempotent)."

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path)

    def handle(self, *args, file: Path, **options):
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as exc:
            raise CommandError(f"cannot read {file}: {exc.strerror}") from None
        try:
            summary = registry_import(data=registry_file_parse(text))
        except RegistryFileError as exc:
            raise CommandError(f"{file}: nothing was imported:\n  " + "\n  ".join(exc.errors)) from None
        if not summary.changed:
            self.stdout.write(f"{file}: the registry already matches; nothing changed.")
            return
        for label in summary.created:
            self.stdout.write(f"created {label}")
        for label in summary.updated:
            self.stdout.write(f"updated {label}")
