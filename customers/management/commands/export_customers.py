from __future__ import annotations

import os
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from customers import importing


class Command(BaseCommand):
    help = (
        "Write every customer with tier, statuses and usernames, as CSV (the columns import_customers reads, "
        "so the file imports back unchanged) or JSON (every credential in full). Hashes only with --with-hashes."
    )

    def add_arguments(self, parser):
        parser.add_argument("--format", choices=["csv", "json"], default="csv")
        parser.add_argument(
            "--with-hashes",
            action="store_true",
            help="Include the htpasswd hashes (CSV: the username's; JSON: every credential's).",
        )
        parser.add_argument(
            "--output", "-o", type=Path, metavar="PATH", help="Write to a new file (mode 0600) instead of stdout."
        )

    def handle(self, *args, format: str, with_hashes: bool, output: Path | None, **options):
        export = importing.export_csv if format == "csv" else importing.export_json
        if output is None:
            count = export(_Writer(self.stdout), with_hashes=with_hashes)
        else:
            try:
                # 0600 from the start: the file may hold hashes.
                fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except OSError as exc:
                raise CommandError(f"cannot create {output}: {exc.strerror}") from exc
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
                count = export(out, with_hashes=with_hashes)
        self.stderr.write(f"Exported {count} customer(s).")


class _Writer:
    """A file-like view of the command's stdout that adds no line ends."""

    def __init__(self, wrapper) -> None:
        self.wrapper = wrapper

    def write(self, text: str) -> int:
        self.wrapper.write(text, ending="")
        return len(text)
