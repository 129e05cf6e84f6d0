"""`manage.py sync_catalog`: load KAITO's preset catalogue, the SKU table and prices into the database."""

from argparse import ArgumentParser
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from catalog.loader import DATA_DIR, CatalogDataError, load_catalog
from catalog.services import catalog_sync


class Command(BaseCommand):
    help = "Load the catalog data files (idempotent: upsert, deactivate what disappeared, delete nothing)."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--data-dir", type=Path, default=DATA_DIR, help="Folder with the catalog data files.")

    def handle(self, *args: object, data_dir: Path, **options: object) -> None:
        try:
            data = load_catalog(data_dir)
        except CatalogDataError as exc:
            raise CommandError(f"catalog data is invalid: {exc}") from exc
        counts = catalog_sync(data=data)
        for kind, counter in counts.items():
            parts = ", ".join(f"{n} {what}" for what, n in sorted(counter.items()))
            self.stdout.write(f"{kind}: {parts or 'nothing to do'}")
