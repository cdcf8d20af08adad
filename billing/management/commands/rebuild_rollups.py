from datetime import date

from django.core.management.base import BaseCommand, CommandError

from billing.rollups import rollups_rebuild


class Command(BaseCommand):
    help = (
        "Recompute the dashboard's call rollups (hour and day) from the raw call rows, for every UTC day "
        "from --since on (all days by default). Safe while calls are being recorded."
    )

    def add_arguments(self, parser):
        parser.add_argument("--since", metavar="YYYY-MM-DD", help="first UTC day to rebuild (default: all)")

    def handle(self, *args, since=None, **options):
        try:
            first = date.fromisoformat(since) if since else None
        except ValueError:
            raise CommandError(f"--since must be a date like 2025-01-31, not {since!r}") from None
        calls = rollups_rebuild(since=first)
        scope = f"since {first}" if first else "all days"
        self.stdout.write(f"rebuilt the rollups of {calls} calls ({scope})")
