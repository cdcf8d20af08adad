from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from routing.services import api_key_create


class Command(BaseCommand):
    help = "Create an API key for USERNAME. The key is printed once, on the last line; only its hash is stored."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="default", help="A label for the key (default: default).")
        parser.add_argument(
            "--read-dashboard",
            action="store_true",
            help="The read scope: the key also reads the dashboard's JSON and CSV (its owner's spend and calls).",
        )

    def handle(self, *args, username: str, name: str, read_dashboard: bool, **options):
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"no user named {username!r}")
        key, raw_key = api_key_create(user=user, name=name, reads_dashboard=read_dashboard)
        self.stdout.write(f"created key {key.prefix}… ({name}) for {username}; copy it now, it is not shown again:")
        self.stdout.write(raw_key)
