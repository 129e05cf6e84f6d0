"""`manage.py ensure_admin`: create the local sandbox admin once and print its credentials."""

import secrets
from argparse import ArgumentParser
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create a local superuser for the sandbox (idempotent) and print how to sign in."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--username", default="admin")
        parser.add_argument(
            "--credentials-file",
            type=Path,
            default=Path(settings.BASE_DIR) / ".run" / "admin-credentials",
            help="Where the generated password is kept (outside git) so later runs can print it again.",
        )

    def handle(self, *args: object, username: str, credentials_file: Path, **options: object) -> None:
        users = get_user_model().objects
        password = credentials_file.read_text().strip() if credentials_file.exists() else ""
        user = users.filter(username=username).first()
        if user is None or not password:
            password = secrets.token_urlsafe(12)
            credentials_file.parent.mkdir(parents=True, exist_ok=True)
            credentials_file.write_text(password + "\n")
            credentials_file.chmod(0o600)
            if user is None:
                users.create_superuser(username=username, email=f"{username}@localhost", password=password)
            else:
                user.set_password(password)
                user.save(update_fields=["password"])
        self.stdout.write(f"Sign in as {username!r} with password {password!r} (kept in {credentials_file}).")
