from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from customers import follow as follow_module
from customers import sync


class Command(BaseCommand):
    help = (
        "Rewrite every tier's htpasswd file from the database. Run it every minute (systemd timer or "
        "cron): it repairs drift and drops credentials whose expiry has passed. With --check, change "
        "nothing: print each difference and exit 1 if any file differs. With --follow (PostgreSQL, for "
        "servers other than the one staff use), keep running and rewrite tiers as soon as another server "
        "changes them."
    )

    def add_arguments(self, parser):
        parser.add_argument("--check", action="store_true", help="Only report differences; exit 1 if any.")
        parser.add_argument(
            "--follow",
            action="store_true",
            help="Keep running: rewrite tiers when another server changes them (PostgreSQL LISTEN/NOTIFY).",
        )
        parser.add_argument(
            "--interval",
            type=float,
            default=30.0,
            help="With --follow: rewrite every tier after this many quiet seconds (default 30).",
        )

    def handle(self, *args, check: bool = False, follow: bool = False, interval: float = 30.0, **options):
        if follow:
            return self.follow(interval)
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

    def follow(self, interval: float) -> None:
        if interval <= 0:
            raise CommandError("--interval must be positive.")
        if not follow_module.supported():
            raise CommandError(
                "--follow needs PostgreSQL (LISTEN/NOTIFY). With SQLite there is only one server; "
                "run sync_htpasswd from the one-minute timer instead."
            )
        self.stdout.write(f"Following tier changes; a full rewrite after every {interval:g} quiet seconds.")

        def report(written: sync.WriteReport) -> None:
            for slug in written.written:
                self.stdout.write(f"rewrote {sync.tier_path(slug)}")
            for slug, error in written.failed.items():
                self.stderr.write(f"could not write {sync.tier_path(slug)}: {error}")
            self.stdout.flush()

        try:
            follow_module.follow(idle_seconds=interval, on_write=report)
        except KeyboardInterrupt:
            pass
