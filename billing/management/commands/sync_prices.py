from django.core.management.base import BaseCommand

from billing.price_sync import PriceTuple, price_sync

ACTIONS = {
    "add": "added",
    "update": "updated",
    "manual-kept": "kept (manual)",
    "same": "unchanged",
    "not-found": "not in genai-prices",
}


class Command(BaseCommand):
    help = "Fill and refresh model prices from the genai-prices package's bundled data (offline)."

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="Print the differences, change nothing.")

    def handle(self, *args, dry_run: bool = False, **options):
        changes = price_sync(dry_run=dry_run)
        width = max((len(c.model) for c in changes), default=5)
        header = ("model", "old (in / out / cached / write)", "new (in / out / cached / write)")
        self.stdout.write(f"{header[0]:<{width}}  {header[1]:<32}  {header[2]:<32}  result")
        for change in changes:
            verb = ACTIONS[change.action]
            if dry_run and change.action in ("add", "update"):
                verb = f"would be {verb}"
            self.stdout.write(f"{change.model:<{width}}  {_fmt(change.old):<32}  {_fmt(change.new):<32}  {verb}")
        applied = sum(c.action in ("add", "update") for c in changes)
        self.stdout.write(f"{applied} price(s) {'would change' if dry_run else 'changed'}.")


def _fmt(price: PriceTuple | None) -> str:
    if price is None:
        return "-"
    return " / ".join("-" if v is None else f"{v.normalize():f}" for v in price)
