from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from customers import importing, services
from customers.audit import Actor
from customers.models import Tier

from ._progress import report_unwritten_tiers


class Command(BaseCommand):
    help = (
        "Adopt an existing Apache htpasswd file into tier TIER. Every user keeps their hash ($2b$ is stored as "
        "$2y$), so customers keep their passwords; a user without a customer gets a placeholder customer "
        "flagged for review. A user who already belongs to another tier is refused. All or nothing, with one "
        "rewrite of the tier file; safe to re-run."
    )

    def add_arguments(self, parser):
        parser.add_argument("tier", help="The tier's slug.")
        parser.add_argument("path", type=Path, help="The htpasswd file, e.g. /etc/apache2/fpro.passwd.")
        parser.add_argument(
            "--skip-conflicts",
            action="store_true",
            help="Leave out (and report) users who belong to another tier, instead of adopting nothing.",
        )

    def handle(self, *args, tier: str, path: Path, skip_conflicts: bool, **options):
        target = Tier.objects.filter(slug__iexact=tier).first()  # as import_customers matches tier slugs
        if target is None:
            known = ", ".join(Tier.objects.values_list("slug", flat=True)) or "(none yet)"
            raise CommandError(f"unknown tier {tier!r}; the tiers are {known}")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise CommandError(f"cannot read {path}: {exc.strerror}") from exc
        try:
            entries, warnings = importing.read_htpasswd(data)
            for warning in warnings:
                self.stderr.write(str(warning))
            plan = services.adopt_htpasswd(
                target,
                entries,
                actor=Actor.command(importing.COMMAND_HTPASSWD),
                source=path.name,
                skip_conflicts=skip_conflicts,
            )
        except importing.ImportFailed as exc:
            for problem in exc.problems:
                self.stderr.write(str(problem))
            raise CommandError(f"{len(exc.problems)} problem(s) found; nothing was changed.") from None
        for problem in plan.skipped:
            self.stderr.write(f"{problem} (skipped)")
        self.stdout.write(
            f"Adopted {len(entries) - len(plan.skipped)} user(s) into {target.slug}: {plan.adopted} with a new "
            f"placeholder customer (flagged for review), {plan.attached} added to an existing customer, "
            f"{plan.updated} with a changed hash, {plan.unchanged} unchanged; {len(plan.skipped)} skipped."
        )
        report_unwritten_tiers(plan.changes)
        if plan.adopted:
            self.stdout.write(
                "Complete the placeholder customers' names and emails in the admin (filter: needs review), "
                "or import a customer CSV that names their usernames."
            )
