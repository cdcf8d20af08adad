from django.core.management.base import BaseCommand, CommandError

from billing.body_retention import call_bodies_purge


class Command(BaseCommand):
    help = (
        "Delete stored call bodies older than the retention period (ROUTERWEB_BODY_RETENTION_DAYS, or "
        "--days). The recorder's upkeep does the same every few minutes; this is for cron or a one-off."
    )

    def add_arguments(self, parser):
        parser.add_argument("--days", type=int, help="keep the bodies of the last DAYS days (default: the setting)")

    def handle(self, *args, days=None, **options):
        if days is not None and days < 1:
            raise CommandError("--days must be at least 1.")
        deleted = call_bodies_purge(days=days)
        self.stdout.write(f"deleted {deleted} call bodies")
