from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from customers import importing, services
from customers.audit import Actor

from ._progress import TerminalProgress, report_unwritten_tiers


class Command(BaseCommand):
    help = (
        "Create or update customers from a CSV file (header row; columns email, name, tier, and optionally "
        "status, payment_status, username, password, password_hash, stripe_customer_id), keyed by email. "
        "Every row is checked first: if any is invalid, each problem is printed as 'line N: ...' and nothing "
        "changes. Each affected tier file is rewritten once. Generated secrets go only to --credentials-out."
    )

    def add_arguments(self, parser):
        parser.add_argument("path", type=Path, help="The CSV file (UTF-8, with or without BOM; CRLF is fine).")
        parser.add_argument(
            "--dry-run", action="store_true", help="Check and report what would change; change nothing."
        )
        parser.add_argument(
            "--credentials-out",
            type=Path,
            metavar="PATH",
            help="New file (mode 0600) for generated secrets, as CSV email,username,password. Never overwritten.",
        )

    def handle(self, *args, path: Path, dry_run: bool, credentials_out: Path | None, **options):
        # Before any bcrypt work: an existing file may hold the only copy of
        # earlier secrets, so it is never overwritten. A dry run writes nothing.
        if credentials_out is not None and credentials_out.exists() and not dry_run:
            raise CommandError(
                f"{credentials_out} already exists; it may hold earlier secrets, so it is never overwritten."
            )
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise CommandError(f"cannot read {path}: {exc.strerror}") from exc
        progress = TerminalProgress(self.stderr)
        try:
            prepared, warnings = importing.prepare_customer_import(
                data, source=path.name, can_generate=credentials_out is not None, dry_run=dry_run, progress=progress
            )
        except importing.ImportFailed as exc:
            progress.finish()
            self._fail(exc)
        progress.finish()
        for warning in warnings:
            self.stderr.write(str(warning))
        plan = prepared.plan
        if dry_run:
            self.stdout.write(
                f"Dry run: nothing changed. Would create {plan.created}, update {plan.updated}, "
                f"leave {plan.unchanged} unchanged."
            )
            self._details(plan, "would be ")
            return
        try:
            plan = services.apply_customer_import(
                prepared, actor=Actor.command(importing.COMMAND_CUSTOMERS), credentials_out=credentials_out
            )
        except importing.ImportFailed as exc:
            self._fail(exc)
        except OSError as exc:
            raise CommandError(f"nothing was changed: cannot write {credentials_out}: {exc.strerror}") from exc
        self.stdout.write(f"Created {plan.created}, updated {plan.updated}, unchanged {plan.unchanged}.")
        self._details(plan, "")
        if plan.generated:
            self.stdout.write(f"{len(plan.generated)} generated secret(s) written to {credentials_out} (mode 0600).")
        report_unwritten_tiers(plan.changes)

    def _details(self, plan: importing.CustomerPlan, would: str) -> None:
        if plan.credentials_created or plan.credentials_updated:
            self.stdout.write(
                f"Credentials {would}issued: {plan.credentials_created} ({plan.generated_count} with a generated "
                f"secret); {would}given a new hash: {plan.credentials_updated}."
            )
        tiers = list(plan.changes.gaining_tiers) + [
            t for t in plan.changes.losing_tiers if t not in plan.changes.gaining_tiers
        ]
        self.stdout.write(f"Tier files {would}rewritten: {', '.join(tiers) if tiers else 'none'}.")

    def _fail(self, exc: importing.ImportFailed) -> None:
        for problem in exc.problems:
            self.stderr.write(str(problem))
        raise CommandError(f"{len(exc.problems)} problem(s) found; nothing was changed.")
