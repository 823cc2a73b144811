"""Keep each tier's htpasswd file equal to what the database says.

Three rules, each protecting the proxy:

* A file is always rendered whole from committed data, never patched. So a
  rebuild is idempotent: ten triggers and one give the same file.
* Rebuilds run on commit, once per transaction for each affected tier, so a
  rolled-back change writes nothing and a bulk change writes each file once.
* The directory lock is held while the database is read *and* the file is
  written. Otherwise two processes could read in one order and write in the
  other, and the older snapshot would win.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connection, transaction
from django.utils import timezone

from . import htpasswd
from .models import Credential, Customer, Tier, TierFileStatus, this_server

logger = logging.getLogger(__name__)

FILE_HEADER = "Managed by registry-admin. Manual edits are overwritten; change access in the admin."


def htpasswd_dir() -> Path:
    return Path(settings.HTPASSWD_DIR)


def tier_path(slug: str) -> Path:
    return htpasswd_dir() / f"{slug}.htpasswd"


def all_tier_slugs() -> list[str]:
    """Every tier, in the proxy's provider order."""
    return list(Tier.objects.values_list("slug", flat=True))  # Tier.Meta.ordering: position, slug


def entitled_entries(slug: str, now=None) -> list[tuple[str, str]]:
    """The ``(username, hash)`` pairs that belong in the tier's file now."""
    # No ORDER BY: the writer sorts in Python, by code point, the same way on
    # every database (PostgreSQL's collation would order names differently).
    return list(
        Credential.objects.entitled(now)
        .filter(customer__tier__slug=slug)
        .order_by()
        .values_list("username", "password_hash")
    )


def render_tier(slug: str, now=None) -> str:
    return htpasswd.render(entitled_entries(slug, now), header=FILE_HEADER)


# --- Writing ----------------------------------------------------------------


@dataclass
class WriteReport:
    written: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed


def write_tiers(slugs: Iterable[str]) -> WriteReport:
    """Render and write the given tiers' files, in the order given.

    Never raises for an I/O failure: the change that triggered it is already
    committed and is the truth. The failure is logged and recorded in
    TierFileStatus, which the admin banner and /healthz show until a later
    write (the next change, or ``sync_htpasswd``) succeeds.
    """
    slugs = list(dict.fromkeys(slugs))
    report = WriteReport()
    if not slugs:
        return report
    # Retry on the next change: a tier whose last write failed is written
    # again now, whichever tier this change touched. Appended, so the order
    # asked for (a tier move writes the new tier first) is kept.
    slugs += [slug for slug in _failed_tier_slugs() if slug not in slugs]
    try:
        with htpasswd.directory_lock(htpasswd_dir(), timeout=settings.HTPASSWD_LOCK_TIMEOUT):
            stale = htpasswd.remove_stale_temp_files(htpasswd_dir())
            if stale:
                logger.warning("removed temp files left by an interrupted write: %s", ", ".join(stale))
            for slug in slugs:
                _write_one(slug, report)
    except OSError as exc:  # the lock itself: directory missing, unwritable or held too long
        for slug in slugs:
            if slug not in report.written and slug not in report.unchanged:
                report.failed[slug] = str(exc)
    for slug, error in report.failed.items():
        logger.error("could not write the %s tier file %s: %s", slug, tier_path(slug), error)
    _record_status(report)
    return report


def _write_one(slug: str, report: WriteReport) -> None:
    try:
        content = render_tier(slug)
        changed = htpasswd.write_atomic(
            tier_path(slug),
            content,
            mode=settings.HTPASSWD_FILE_MODE,
            group=settings.HTPASSWD_FILE_GROUP,
        )
    except (OSError, KeyError, htpasswd.InvalidEntry) as exc:  # KeyError: unknown HTPASSWD_FILE_GROUP
        report.failed[slug] = f"{type(exc).__name__}: {exc}"
        return
    except Exception as exc:  # noqa: BLE001
        # Anything else (a database error while reading, say) must not
        # escape either: this runs after the commit, so raising would turn
        # a change that did happen into an error page, and skip the other
        # tiers. Record it like any failed write; the next write retries.
        logger.exception("unexpected error while writing the %s tier file", slug)
        report.failed[slug] = f"{type(exc).__name__}: {exc}"
        return
    (report.written if changed else report.unchanged).append(slug)


def _failed_tier_slugs() -> list[str]:
    """Existing tiers whose last write failed (see ``write_tiers``)."""
    try:
        failed = TierFileStatus.objects.on_this_server().exclude(last_error="").values_list("tier_slug", flat=True)
        return list(Tier.objects.filter(slug__in=failed).values_list("slug", flat=True))
    except DatabaseError:
        logger.exception("could not read the tier file status")
        return []


def _record_status(report: WriteReport) -> None:
    now = timezone.now()
    try:
        for slug in report.written:
            TierFileStatus.objects.update_or_create(
                host=this_server(),
                tier_slug=slug,
                defaults={"last_written_at": now, "last_error": "", "last_error_at": None},
            )
        # An unchanged file proves the last error is over; clear it cheaply.
        TierFileStatus.objects.on_this_server().filter(tier_slug__in=report.unchanged).exclude(last_error="").update(
            last_error="", last_error_at=None
        )
        for slug, error in report.failed.items():
            TierFileStatus.objects.update_or_create(
                host=this_server(), tier_slug=slug, defaults={"last_error": error, "last_error_at": now}
            )
    except Exception:  # noqa: BLE001 - status bookkeeping must not hide the write's outcome
        logger.exception("could not record the tier file status")


def sync_all() -> WriteReport:
    """Rewrite every tier's file from the database (what ``sync_htpasswd`` does)."""
    slugs = all_tier_slugs()
    # A deleted tier's recorded failure can never be cleared by a write.
    TierFileStatus.objects.on_this_server().exclude(tier_slug__in=slugs).exclude(last_error="").delete()
    return write_tiers(slugs)


# --- Scheduling on commit -----------------------------------------------------


class _PendingRebuild:
    """The tiers to rewrite when the current transaction commits."""

    def __init__(self) -> None:
        self.slugs: dict[str, None] = {}
        self.done = False

    def add(self, slugs: Iterable[str], first: bool) -> None:
        new = {slug: None for slug in slugs if slug}
        if first:
            self.slugs = {**new, **{s: None for s in self.slugs if s not in new}}
        else:
            self.slugs.update(new)

    def __call__(self) -> None:
        self.done = True
        write_tiers(self.slugs)
        notify_other_servers(self.slugs)


# Other servers' `sync_htpasswd --follow` (see follow.py) listen on this.
NOTIFY_CHANNEL = "registry_admin_tiers"


def notify_other_servers(slugs: Iterable[str]) -> None:
    """Name the rewritten tiers to the followers on other servers (PostgreSQL only)."""
    slugs = [slug for slug in slugs if slug]
    if not slugs or connection.vendor != "postgresql":
        return
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, %s)", [NOTIFY_CHANNEL, ",".join(slugs)])
    except DatabaseError:
        # The change is committed and written here; the followers' periodic
        # full rewrite brings the other servers up to date.
        logger.exception("could not notify the other servers about %s", ", ".join(slugs))


def schedule_rebuild(slugs: Iterable[str], *, first: bool = False, using: str = DEFAULT_DB_ALIAS) -> None:
    """Rewrite these tiers' files once the current transaction commits.

    Outside a transaction that is now. Inside one, every call joins a single
    on-commit callback, so each file is written once however many rows
    changed. ``first`` puts these tiers ahead of those already scheduled:
    on a tier move the new tier is written before the old one, so the
    customer is never in neither file.
    """
    connection = transaction.get_connection(using)
    pending: _PendingRebuild | None = getattr(connection, "_registry_admin_pending", None)
    still_queued = pending is not None and not pending.done and any(
        callback is pending for _sids, callback, _robust in connection.run_on_commit
    )
    if not still_queued:
        # A callback registered in a savepoint that rolled back is dropped
        # by Django; then a fresh one is needed for what follows.
        pending = _PendingRebuild()
        connection._registry_admin_pending = pending
        pending.add(slugs, first)
        transaction.on_commit(pending, using=using)
        return
    pending.add(slugs, first)


def tier_slugs(*tier_ids: int | None) -> dict[int, str]:
    ids = {tier_id for tier_id in tier_ids if tier_id is not None}
    return dict(Tier.objects.filter(pk__in=ids).values_list("pk", "slug")) if ids else {}


def customer_changed(customer: Customer, created: bool, before: dict | None) -> None:
    """Schedule the rewrites a saved customer needs (none if nothing that
    decides entitlement changed)."""
    old_status = before.get("status") if before else None
    old_tier_id = before.get("tier_id") if before else None
    if not created and (old_status, old_tier_id) == (customer.status, customer.tier_id):
        return
    slugs = tier_slugs(customer.tier_id, old_tier_id)
    new_slug = slugs.get(customer.tier_id)
    old_slug = slugs.get(old_tier_id) if old_tier_id != customer.tier_id else None
    schedule_rebuild([new_slug], first=old_slug is not None)
    if old_slug:
        schedule_rebuild([old_slug])


def credential_changed(credential: Credential, before: dict | None = None) -> None:
    """Schedule the rewrite of the credential's tier, and of its previous
    customer's tier if it was moved to another customer (new one first)."""
    customer_ids = [credential.customer_id]
    if before and before.get("customer_id") not in (None, credential.customer_id):
        customer_ids.append(before["customer_id"])
    tier_of = dict(Customer.objects.filter(pk__in=customer_ids).values_list("pk", "tier_id"))
    # A customer missing here is being deleted; its own receiver rebuilds.
    tier_ids = [tier_of[pk] for pk in customer_ids if pk in tier_of]
    slugs = tier_slugs(*tier_ids)
    schedule_rebuild([slugs[tier_id] for tier_id in dict.fromkeys(tier_ids)])


# --- Drift ---------------------------------------------------------------------


@dataclass
class Drift:
    slug: str
    path: Path
    problem: str
    missing: list[str] = field(default_factory=list)  # usernames the file lacks
    unexpected: list[str] = field(default_factory=list)  # usernames the file should not hold
    first_malformed: str = ""  # the first line Apache would not understand, if any

    def __str__(self) -> str:
        parts = [f"{self.path}: {self.problem}"]
        if self.first_malformed:
            parts.append(f"malformed {self.first_malformed}")
        if self.missing:
            parts.append(f"missing {', '.join(self.missing)}")
        if self.unexpected:
            parts.append(f"unexpected {', '.join(self.unexpected)}")
        return "; ".join(parts)

    def summary(self) -> str:
        """The same without usernames or paths, for unauthenticated callers."""
        summary = f"{self.path.name}: {self.problem}"
        if self.missing or self.unexpected:
            summary += f" ({len(self.missing)} missing, {len(self.unexpected)} unexpected)"
        return summary


def find_drift(now=None) -> list[Drift]:
    """Compare every tier file on disk with what the database says now.

    An expired credential still in a file counts as drift: the file is
    compared with what it *should* hold at this moment.
    """
    drifts = []
    for slug in all_tier_slugs():
        path = tier_path(slug)
        expected = render_tier(slug, now)
        try:
            actual = htpasswd.read_text(path)
        except OSError as exc:
            drifts.append(Drift(slug, path, f"unreadable ({exc.strerror})"))
            continue
        if actual is None:
            drifts.append(Drift(slug, path, "missing"))
        elif actual != expected:
            drifts.append(_describe_difference(slug, path, expected, actual))
    return drifts


def _describe_difference(slug: str, path: Path, expected: str, actual: str) -> Drift:
    expected_lines = {line for line in expected.splitlines() if line and not line.startswith("#")}
    actual_entries, errors = htpasswd.parse(actual)
    actual_lines = {f"{e.username}:{e.password_hash}" for e in actual_entries}
    drift = Drift(slug, path, "differs from the database")
    drift.missing = sorted({line.split(":", 1)[0] for line in expected_lines - actual_lines})
    drift.unexpected = sorted({line.split(":", 1)[0] for line in actual_lines - expected_lines})
    if errors:
        drift.first_malformed = str(errors[0])
    return drift


def recorded_failures() -> list[TierFileStatus]:
    return list(TierFileStatus.objects.on_this_server().exclude(last_error=""))
