import os
import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create the superuser 'admin' if missing; password from ROUTERWEB_ADMIN_PASSWORD, else generated."

    def handle(self, *args, **options):
        users = get_user_model()
        if users.objects.filter(username="admin").exists():
            self.stdout.write("admin user: exists")
            return
        password = os.environ.get("ROUTERWEB_ADMIN_PASSWORD") or secrets.token_urlsafe(12)
        users.objects.create_superuser("admin", "admin@localhost", password)
        if os.environ.get("ROUTERWEB_ADMIN_PASSWORD"):
            self.stdout.write("admin user: created with the password from ROUTERWEB_ADMIN_PASSWORD")
        else:
            self.stdout.write(self.style.WARNING(f"admin user: created; password (shown once): {password}"))
