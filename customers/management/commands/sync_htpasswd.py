from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from customers import sync


class Command(BaseCommand):
    help = (
        "Rewrite every tier's htpasswd file from the database. Run it every minute (systemd timer or "
        "cron): it repairs drift and drops credentials whose expiry has passed. With --check, change "
        "nothing: print each difference and exit 1 if any file differs."
    )

    def add_arguments(self, parser):
        parser.add_argument("--check", action="store_true", help="Only report differences; exit 1 if any.")

    def handle(self, *args, check: bool = False, **options):
        if check:
            drifts = sync.find_drift()
            for drift in drifts:
                self.stdout.write(str(drift))
            if drifts:
                raise CommandError(f"{len(drifts)} tier file(s) differ from the database.", returncode=1)
            self.stdout.write("All tier files match the database.")
            return
        report = sync.sync_all()
        for slug in report.written:
            self.stdout.write(f"rewrote {sync.tier_path(slug)}")
        if report.failed:
            for slug, error in report.failed.items():
                self.stderr.write(f"could not write {sync.tier_path(slug)}: {error}")
            raise CommandError(f"{len(report.failed)} tier file(s) could not be written.")
        self.stdout.write(f"{len(report.written)} rewritten, {len(report.unchanged)} already in sync.")
