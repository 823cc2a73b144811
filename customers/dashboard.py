"""Read-only queries behind the staff dashboard and the customer page.

Nothing here changes state. The questions answered are the ones staff ask
at the end of a billing cycle: who is lapsed, what changed recently, are the
tier files what the database says, and why can this customer not pull?
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.db.models import Count, QuerySet
from django.utils import timezone

from . import htpasswd, sync
from .models import AuditEvent, Credential, Customer, Tier, TierFileStatus

RECENT_CHANGES = 15
PAST_DUE_SHOWN = 50

# --- Grace period -------------------------------------------------------------------


def grace_period() -> timedelta:
    return timedelta(days=settings.GRACE_PERIOD_DAYS)


def lapsed(queryset: QuerySet[Customer], now: datetime | None = None) -> QuerySet[Customer]:
    """Past due for longer than the grace period (``suspend_lapsed`` would
    suspend them)."""
    cutoff = (now or timezone.now()) - grace_period()
    return queryset.filter(payment_status=Customer.PaymentStatus.PAST_DUE, past_due_since__lt=cutoff)


def in_grace(queryset: QuerySet[Customer], now: datetime | None = None) -> QuerySet[Customer]:
    cutoff = (now or timezone.now()) - grace_period()
    return queryset.filter(payment_status=Customer.PaymentStatus.PAST_DUE, past_due_since__gte=cutoff)


def grace_remaining(customer: Customer, now: datetime | None = None) -> timedelta | None:
    """Time left before a past-due customer lapses (negative once lapsed)."""
    if customer.payment_status != Customer.PaymentStatus.PAST_DUE or customer.past_due_since is None:
        return None
    return customer.past_due_since + grace_period() - (now or timezone.now())


def describe_grace(remaining: timedelta | None) -> str:
    if remaining is None:
        return ""
    days = remaining.total_seconds() / 86400
    if 0 < days < 1:
        return f"{days * 24:.0f} hour(s) left"
    if days >= 1:
        return f"{round(days)} day(s) left"
    return f"lapsed {round(-days)} day(s) ago" if days <= -1 else "lapsed today"


# --- Dashboard ----------------------------------------------------------------------


@dataclass
class TierCounts:
    tier: Tier
    by_status: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.by_status.values())


def customer_counts() -> list[TierCounts]:
    """Customers per tier and status, in one grouped query."""
    rows = Customer.objects.values("tier_id", "status").annotate(n=Count("id")).order_by()
    counts: dict[int, dict[str, int]] = {}
    for row in rows:
        counts.setdefault(row["tier_id"], {})[row["status"]] = row["n"]
    return [
        TierCounts(tier, {status: counts.get(tier.pk, {}).get(status, 0) for status in Customer.Status.values})
        for tier in Tier.objects.order_by("position", "slug")
    ]


@dataclass
class PastDue:
    customer: Customer
    remaining: timedelta | None

    @property
    def lapsed(self) -> bool:
        return self.remaining is not None and self.remaining <= timedelta(0)

    @property
    def grace(self) -> str:
        return describe_grace(self.remaining)


def past_due(now: datetime | None = None, limit: int = PAST_DUE_SHOWN) -> list[PastDue]:
    """Past-due customers who still have access or have not been cut off
    yet, the most overdue first."""
    now = now or timezone.now()
    customers = (
        Customer.objects.filter(payment_status=Customer.PaymentStatus.PAST_DUE)
        .exclude(status=Customer.Status.REVOKED)
        .select_related("tier")
        .order_by("past_due_since", "name")[:limit]
    )
    return [PastDue(customer, grace_remaining(customer, now)) for customer in customers]


def recent_changes(limit: int = RECENT_CHANGES) -> list[AuditEvent]:
    return list(AuditEvent.objects.select_related("customer")[:limit])


@dataclass
class TierFileState:
    tier: Tier
    path: Path
    entries: int | None  # lines in the file now; None if unreadable
    modified_at: datetime | None  # the file's mtime on disk
    status: TierFileStatus | None
    drift: sync.Drift | None

    @property
    def ok(self) -> bool:
        return self.drift is None and not (self.status and self.status.last_error)


def tier_file_states(now: datetime | None = None) -> list[TierFileState]:
    """Each tier file as it is on disk, compared with the database now."""
    drifts = {drift.slug: drift for drift in sync.find_drift(now)}
    statuses = {status.tier_slug: status for status in TierFileStatus.objects.on_this_server()}
    states = []
    for tier in Tier.objects.order_by("position", "slug"):
        path = sync.tier_path(tier.slug)
        entries = modified_at = None
        try:
            text = htpasswd.read_text(path)
            if text is not None:
                # Counted, not parsed: find_drift has already validated the lines.
                entries = sum(1 for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#"))
                modified_at = datetime.fromtimestamp(os.stat(path).st_mtime, tz=timezone.get_current_timezone())
        except OSError:
            pass
        states.append(TierFileState(tier, path, entries, modified_at, statuses.get(tier.slug), drifts.get(tier.slug)))
    return states


def summary(now: datetime | None = None) -> dict:
    """Everything the dashboard shows, as template context."""
    now = now or timezone.now()
    files = tier_file_states(now)
    return {
        "tier_counts": customer_counts(),
        "statuses": Customer.Status.choices,
        "past_due": past_due(now),
        "lapsed_count": lapsed(Customer.objects.exclude(status=Customer.Status.REVOKED), now).count(),
        "recent_changes": recent_changes(),
        "tier_files": files,
        # Failed writes have their own banner on every admin page
        # (context_processors.tier_file_alerts); this one is for drift.
        "tier_files_bad": [state for state in files if state.drift is not None],
        "grace_period_days": settings.GRACE_PERIOD_DAYS,
    }


# --- "Why can't they pull?" ------------------------------------------------------------


@dataclass
class CredentialCheck:
    credential: Credential
    should_be_in_file: bool
    in_file: bool  # the file on disk holds this username with this exact hash
    file_hash_differs: bool  # the username is in the file, with another hash
    reasons: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.should_be_in_file == self.in_file and not self.file_hash_differs


@dataclass
class AccessReport:
    customer: Customer
    tier_path: Path
    file_problem: str  # "" when the tier file could be read
    credentials: list[CredentialCheck]
    findings: list[str]  # plain sentences for staff, most important first
    grace: str
    history: list[AuditEvent]

    @property
    def can_pull(self) -> bool:
        return any(check.in_file for check in self.credentials)


def access_report(customer: Customer, now: datetime | None = None, history: int = 50) -> AccessReport:
    """What decides whether this customer can pull right now, checked
    against the tier file on disk (not only the database)."""
    now = now or timezone.now()
    path = sync.tier_path(customer.tier.slug)
    file_problem = ""
    on_disk: dict[str, str] = {}
    try:
        text = htpasswd.read_text(path)
    except OSError as exc:
        text, file_problem = None, f"The {customer.tier.slug} tier file cannot be read ({exc.strerror})."
    if text is None and not file_problem:
        file_problem = f"The {customer.tier.slug} tier file is missing; the proxy answers 500. Run sync_htpasswd."
    if text is not None:
        for entry in htpasswd.parse(text)[0]:
            on_disk.setdefault(entry.username.lower(), entry.password_hash)  # Apache uses the first line

    findings = []
    if customer.status == Customer.Status.SUSPENDED:
        why = {"nonpayment": " for non-payment; a payment reinstates them", "staff": " by staff"}
        findings.append(f"The customer is suspended{why.get(customer.suspension_reason, '')}.")
    elif customer.status == Customer.Status.REVOKED:
        findings.append("The customer is revoked; only staff can reactivate them.")
    grace = describe_grace(grace_remaining(customer, now))
    if customer.payment_status == Customer.PaymentStatus.PAST_DUE:
        findings.append(f"Payment is past due ({grace}).")
    elif customer.payment_status != Customer.PaymentStatus.CURRENT:
        findings.append(f"Payment status is {customer.get_payment_status_display().lower()}.")
    if file_problem:
        findings.append(file_problem)

    checks = []
    for credential in customer.credentials.order_by("username"):
        stored = on_disk.get(credential.username.lower())
        check = CredentialCheck(
            credential,
            should_be_in_file=customer.is_entitled and credential.is_usable(now),
            in_file=stored == credential.password_hash,
            file_hash_differs=stored is not None and stored != credential.password_hash,
        )
        if credential.revoked_at:
            check.reasons.append(f"revoked {timezone.localtime(credential.revoked_at):%Y-%m-%d %H:%M}")
        elif credential.expires_at and credential.expires_at <= now:
            check.reasons.append(f"expired {timezone.localtime(credential.expires_at):%Y-%m-%d %H:%M}")
        elif credential.expires_at:
            check.reasons.append(f"expires {timezone.localtime(credential.expires_at):%Y-%m-%d %H:%M}")
        if check.should_be_in_file and not check.in_file:
            check.reasons.append("should be in the file but is not: run sync_htpasswd")
        if check.in_file and not check.should_be_in_file:
            check.reasons.append("still in the file although it should not be: run sync_htpasswd")
        if check.file_hash_differs:
            check.reasons.append("the file holds a different hash for this username")
        checks.append(check)
    if not checks:
        findings.append("The customer has no credentials: issue one.")
    elif customer.is_entitled and not any(check.should_be_in_file for check in checks):
        findings.append(
            "Every credential is revoked or expired: issue a new one, or clear an expiry date on the credential's page."
        )
    if any(not check.ok for check in checks):
        findings.append("The tier file on disk differs from the database for this customer: run sync_htpasswd.")
    if not findings:
        findings.append("Nothing blocks this customer: check the username, secret and repository they use.")
    events = list(AuditEvent.objects.filter(customer=customer)[:history])
    return AccessReport(customer, path, file_problem, checks, findings, grace, events)
