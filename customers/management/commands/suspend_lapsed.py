from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from customers import services, sync
from customers.audit import Actor


class Command(BaseCommand):
    help = (
        "Suspend, for non-payment, every active customer whose payment has been past due for longer than "
        "GRACE_PERIOD_DAYS. Run it from cron (e.g. hourly); it is idempotent. A later payment (Stripe's "
        "invoice.paid) lifts such a suspension; a suspension by staff is never lifted by billing."
    )

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="List who would be suspended; change nothing.")
        parser.add_argument(
            "--grace-days",
            type=int,
            default=None,
            help=f"Override GRACE_PERIOD_DAYS (now {settings.GRACE_PERIOD_DAYS}) for this run.",
        )

    def handle(self, *args, dry_run: bool = False, grace_days: int | None = None, **options):
        if grace_days is None:
            grace_days = settings.GRACE_PERIOD_DAYS
        if grace_days < 0:
            raise CommandError("--grace-days must be 0 or more.")
        if dry_run:
            lapsed = list(services.lapsed_customers(grace_days=grace_days).select_related("tier"))
            for customer in lapsed:
                self.stdout.write(f"would suspend {customer} (past due since {customer.past_due_since:%Y-%m-%d %H:%M})")
            self.stdout.write(f"{len(lapsed)} customer(s) past the {grace_days}-day grace period; nothing changed.")
            return
        actor = Actor.command("suspend_lapsed", reason=f"payment past due for more than {grace_days} days")
        suspended = services.suspend_lapsed(actor=actor, grace_days=grace_days)
        for customer in suspended:
            self.stdout.write(f"suspended {customer} (past due since {customer.past_due_since:%Y-%m-%d %H:%M})")
        self.stdout.write(f"{len(suspended)} customer(s) suspended for non-payment.")
        # The suspensions are committed either way; make a failed file write
        # visible to cron, since the proxy would still let these customers in.
        affected = {customer.tier.slug for customer in suspended}
        failed = [status for status in sync.recorded_failures() if status.tier_slug in affected]
        if failed:
            for status in failed:
                self.stderr.write(f"could not write {sync.tier_path(status.tier_slug)}: {status.last_error}")
            raise CommandError("Tier files could not be written; fix the cause and run sync_htpasswd.")
