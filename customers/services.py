"""Every change of entitlement, in one place.

The admin, the billing webhook and the management commands change state
only through these functions. Each runs in one transaction, says who is
acting (the audit trail records it; see ``audit.py``) and schedules the
affected tier files to be rewritten when the transaction commits.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models.functions import Lower
from django.utils import timezone

from . import htpasswd, passwords, sync
from .audit import Actor, acting_as
from .htpasswd import USERNAME_RE
from .models import Credential, Customer, Tier

Status = Customer.Status
PaymentStatus = Customer.PaymentStatus
SuspensionReason = Customer.SuspensionReason


@dataclass(frozen=True)
class IssuedCredential:
    credential: Credential
    # The generated secret, to show once. None when the caller supplied the
    # password or hash itself.
    secret: str | None


# --- Validation helpers -----------------------------------------------------------


def validate_username(username: str, *, exclude_pk: int | None = None) -> str:
    if not USERNAME_RE.fullmatch(username or ""):
        raise ValidationError(
            f"Invalid username {username!r}: use 1 to 150 letters, digits or . _ @ + -, "
            "starting with a letter or digit.",
            code="invalid_username",
        )
    taken = Credential.objects.annotate(lower=Lower("username")).filter(lower=username.lower())
    if exclude_pk is not None:
        taken = taken.exclude(pk=exclude_pk)
    if taken.exists():
        raise ValidationError(
            f"The username {username!r} is already in use (usernames are unique across all tiers, ignoring case).",
            code="username_taken",
        )
    return username


def username_from_email(email: str) -> str:
    """A valid username from an email's local part, not yet in use."""
    in_use = Credential.objects.annotate(lower=Lower("username"))
    return next(c for c in htpasswd.username_candidates(email) if not in_use.filter(lower=c.lower()).exists())


def hash_password(password: str) -> str:
    try:
        return passwords.hash_secret(password, settings.HTPASSWD_BCRYPT_ROUNDS)
    except passwords.PasswordError as exc:
        raise ValidationError(str(exc), code="invalid_password") from exc


# --- Customers ----------------------------------------------------------------------


def create_customer(
    *,
    name: str,
    email: str,
    tier: Tier,
    actor: Actor,
    status: str = Status.ACTIVE,
    payment_status: str = PaymentStatus.CURRENT,
    stripe_customer_id: str | None = None,
    needs_review: bool = False,
) -> Customer:
    with transaction.atomic(), acting_as(actor):
        if Customer.objects.filter(email__iexact=email.strip()).exists():
            raise ValidationError(f"A customer with the email {email!r} already exists.", code="email_taken")
        customer = Customer(
            name=name,
            email=email,
            tier=tier,
            status=status,
            payment_status=payment_status,
            stripe_customer_id=stripe_customer_id,
            needs_review=needs_review,
        )
        customer.full_clean()
        customer.save()
        sync.schedule_rebuild([tier.slug])
        return customer


def _set_status(
    customer: Customer, status: str, reason: str, actor: Actor, *, keep_revoked: bool = False
) -> Customer:
    with transaction.atomic(), acting_as(actor):
        # Lock the row so two staff members (or staff and a webhook) acting
        # at once apply their changes one after the other; decide on the
        # locked row, not on the caller's possibly stale copy.
        customer = Customer.objects.select_for_update().get(pk=customer.pk)
        if customer.status == status and customer.suspension_reason == reason:
            return customer
        if keep_revoked and customer.status == Status.REVOKED:
            return customer
        customer.status = status
        customer.suspension_reason = reason
        customer.save(update_fields=["status", "suspension_reason", "updated_at"])
        sync.schedule_rebuild([customer.tier.slug])
        return customer


def suspend(customer: Customer, *, actor: Actor, reason: str = SuspensionReason.STAFF) -> Customer:
    """Take access away, reversibly. A revoked customer stays revoked: a
    suspension for non-payment could otherwise be lifted by a payment."""
    return _set_status(customer, Status.SUSPENDED, reason, actor, keep_revoked=True)


def revoke(customer: Customer, *, actor: Actor) -> Customer:
    """Take access away for good: only staff can reactivate a revoked customer."""
    return _set_status(customer, Status.REVOKED, SuspensionReason.NONE, actor)


def reactivate(customer: Customer, *, actor: Actor) -> Customer:
    return _set_status(customer, Status.ACTIVE, SuspensionReason.NONE, actor)


def change_tier(customer: Customer, tier: Tier, *, actor: Actor) -> Customer:
    with transaction.atomic(), acting_as(actor):
        customer = Customer.objects.select_for_update().get(pk=customer.pk)
        if customer.tier_id == tier.pk:
            return customer
        old_slug = customer.tier.slug
        customer.tier = tier
        customer.save(update_fields=["tier", "updated_at"])
        # The new tier's file first, so the customer is never in neither.
        sync.schedule_rebuild([tier.slug], first=True)
        sync.schedule_rebuild([old_slug])
        return customer


def set_payment_status(
    customer: Customer, payment_status: str, *, actor: Actor, since: datetime | None = None
) -> Customer:
    """``since``: when payment became past due (default now); the grace period counts from it."""
    with transaction.atomic(), acting_as(actor):
        customer = Customer.objects.select_for_update().get(pk=customer.pk)
        if customer.payment_status == payment_status:
            return customer
        if payment_status == PaymentStatus.PAST_DUE and customer.past_due_since is None:
            customer.past_due_since = since or timezone.now()
        customer.payment_status = payment_status  # save() clears past_due_since otherwise
        customer.save(update_fields=["payment_status", "past_due_since", "updated_at"])
        return customer


def delete_customer(customer: Customer, *, actor: Actor) -> None:
    with transaction.atomic(), acting_as(actor):
        slug = customer.tier.slug
        customer.delete()
        sync.schedule_rebuild([slug])


# --- Credentials ----------------------------------------------------------------------


def issue_credential(
    customer: Customer,
    *,
    actor: Actor,
    username: str | None = None,
    password: str | None = None,
    password_hash: str | None = None,
    label: str = "",
    expires_at: datetime | None = None,
) -> IssuedCredential:
    """Give a customer a credential. With neither ``password`` nor
    ``password_hash``, a secret is generated and returned, to show once."""
    secret = None
    if password_hash:
        try:
            password_hash, _warning = passwords.normalize_hash(password_hash)
        except passwords.PasswordError as exc:
            raise ValidationError(str(exc), code="invalid_hash") from exc
    elif password:
        password_hash = hash_password(password)
    else:
        secret = passwords.generate_secret()
        password_hash = hash_password(secret)
    with transaction.atomic(), acting_as(actor):
        username = validate_username(username) if username else username_from_email(customer.email)
        try:
            with transaction.atomic():
                credential = Credential.objects.create(
                    customer=customer, username=username, password_hash=password_hash, label=label,
                    expires_at=expires_at,
                )
        except IntegrityError as exc:
            # Someone took the name between the check and the insert.
            raise ValidationError(f"The username {username!r} is already in use.", code="username_taken") from exc
        sync.schedule_rebuild([customer.tier.slug])
    return IssuedCredential(credential, secret)


def rotate_credential(credential: Credential, *, actor: Actor) -> IssuedCredential:
    """Replace a credential's secret with a new generated one, at once.

    A revoked or expired credential is refused rather than quietly brought
    back (or handed a secret that would not work): issue a new one instead.
    """
    secret = passwords.generate_secret()
    new_hash = hash_password(secret)
    with transaction.atomic(), acting_as(actor):
        credential = Credential.objects.select_for_update().select_related("customer__tier").get(pk=credential.pk)
        if not credential.is_usable():
            raise ValidationError(
                f"{credential.username} is revoked or expired; issue a new credential instead.", code="not_usable"
            )
        credential.password_hash = new_hash
        credential.rotated_at = timezone.now()
        credential.save(update_fields=["password_hash", "rotated_at"])
        sync.schedule_rebuild([credential.customer.tier.slug])
    return IssuedCredential(credential, secret)


def revoke_credential(credential: Credential, *, actor: Actor) -> Credential:
    """Take one credential out of its tier file; the customer keeps the others."""
    with transaction.atomic(), acting_as(actor):
        credential = Credential.objects.select_for_update().select_related("customer__tier").get(pk=credential.pk)
        if credential.revoked_at is None:
            credential.revoked_at = timezone.now()
            credential.save(update_fields=["revoked_at"])
            sync.schedule_rebuild([credential.customer.tier.slug])
        return credential


# --- Billing ---------------------------------------------------------------------------
#
# The Stripe webhook (``billing.py``) and ``suspend_lapsed`` change access only
# through these. Two rules hold throughout: a revoked customer is never
# reinstated by billing (only staff can do that), and only a suspension for
# non-payment is lifted by a payment, never one made by staff.


def record_payment_failed(customer: Customer, *, actor: Actor, since: datetime | None = None) -> Customer:
    """Payment is past due. Access stays until the grace period ends
    (``suspend_lapsed``), which counts from the first failure, ``since``."""
    return set_payment_status(customer, PaymentStatus.PAST_DUE, actor=actor, since=since)


def record_payment(customer: Customer, *, actor: Actor) -> Customer:
    """Payment is current again; lift a suspension for non-payment."""
    with transaction.atomic(), acting_as(actor):
        customer = set_payment_status(customer, PaymentStatus.CURRENT, actor=actor)
        if customer.status == Status.SUSPENDED and customer.suspension_reason == SuspensionReason.NONPAYMENT:
            customer = reactivate(customer, actor=actor)
        return customer


def suspend_for_nonpayment_by_staff(customer: Customer, *, actor: Actor) -> Customer:
    """Staff's "suspend for non-payment": like ``suspend``, but a later payment lifts it."""
    return suspend(customer, actor=actor, reason=SuspensionReason.NONPAYMENT)


def suspend_for_nonpayment(customer: Customer, *, actor: Actor) -> Customer:
    """Suspend an active customer for non-payment. A customer already
    suspended by staff keeps that reason, so a later payment does not lift
    the staff's suspension; a revoked one stays revoked."""
    with transaction.atomic(), acting_as(actor):
        customer = Customer.objects.select_for_update().get(pk=customer.pk)
        if customer.status != Status.ACTIVE:
            return customer
        return suspend(customer, actor=actor, reason=SuspensionReason.NONPAYMENT)


# Stripe subscription status -> what it means for payment and access. Other
# statuses (incomplete, paused) leave both as they are.
SUBSCRIPTION_PAYMENT_STATUS = {
    "active": PaymentStatus.CURRENT,
    "trialing": PaymentStatus.CURRENT,
    "past_due": PaymentStatus.PAST_DUE,
    "unpaid": PaymentStatus.UNPAID,
    "canceled": PaymentStatus.CANCELED,
    "incomplete_expired": PaymentStatus.CANCELED,
}


def apply_subscription_status(
    customer: Customer,
    subscription_status: str,
    *,
    actor: Actor,
    tier: Tier | None = None,
    since: datetime | None = None,
) -> Customer:
    """Set payment, access and (when given) tier from a subscription's
    status. State is taken from the status itself, never toggled, so
    applying the same status twice changes nothing."""
    payment_status = SUBSCRIPTION_PAYMENT_STATUS.get(subscription_status)
    with transaction.atomic(), acting_as(actor):
        if payment_status == PaymentStatus.CURRENT:
            customer = record_payment(customer, actor=actor)
        elif payment_status == PaymentStatus.UNPAID:
            customer = set_payment_status(customer, payment_status, actor=actor)
            customer = suspend_for_nonpayment(customer, actor=actor)
        elif payment_status == PaymentStatus.CANCELED:
            customer = set_payment_status(customer, payment_status, actor=actor)
            customer = revoke(customer, actor=actor)
        elif payment_status is not None:
            customer = set_payment_status(customer, payment_status, actor=actor, since=since)
        # A subscription that ended says nothing about a tier any more.
        if tier is not None and payment_status != PaymentStatus.CANCELED:
            customer = change_tier(customer, tier, actor=actor)
        return customer


def cancel_subscription(customer: Customer, *, actor: Actor) -> Customer:
    """The subscription is gone: payment canceled and access revoked for good."""
    with transaction.atomic(), acting_as(actor):
        customer = set_payment_status(customer, PaymentStatus.CANCELED, actor=actor)
        return revoke(customer, actor=actor)


def note_billing_event_applied(customer: Customer, event_created_at: datetime) -> Customer:
    """Remember the creation time of the newest Stripe event applied, so an
    older one delivered later (Stripe does not keep order) is ignored."""
    with transaction.atomic():
        customer = Customer.objects.select_for_update().get(pk=customer.pk)
        if customer.last_billing_event_at is None or customer.last_billing_event_at < event_created_at:
            customer.last_billing_event_at = event_created_at
            customer.save(update_fields=["last_billing_event_at", "updated_at"])
        return customer


def lapsed_customers(now: datetime | None = None, grace_days: int | None = None):
    """Active customers whose payment has been past due for longer than the grace period."""
    now = now or timezone.now()
    grace_days = settings.GRACE_PERIOD_DAYS if grace_days is None else grace_days
    return Customer.objects.filter(
        status=Status.ACTIVE,
        payment_status=PaymentStatus.PAST_DUE,
        past_due_since__lt=now - timedelta(days=grace_days),
    ).order_by("pk")


def suspend_lapsed(*, actor: Actor, now: datetime | None = None, grace_days: int | None = None) -> list[Customer]:
    """Suspend, for non-payment, every customer past the grace period.

    One transaction for all of them, so each affected tier file is written
    once on commit however many customers lapse. Only active customers are
    selected, so running it again changes nothing.
    """
    with transaction.atomic(), acting_as(actor):
        # Locked, so a payment committing meanwhile is either seen (and the
        # customer no longer selected) or waits and then lifts the suspension.
        lapsed = lapsed_customers(now, grace_days).select_for_update()
        return [suspend_for_nonpayment(customer, actor=actor) for customer in lapsed]


# --- Staff workflow (issue 6): bulk status changes, rotation with overlap -----------

MAX_ROTATION_OVERLAP = timedelta(days=7)


def change_status_of_many(customers: Iterable[Customer], service, *, actor: Actor) -> list[Customer]:
    """Apply ``suspend``, ``revoke`` or ``reactivate`` to many customers in
    one transaction, so each affected tier file is written once, on commit,
    however many customers were selected. Returns those whose status changed.
    """
    changed = []
    with transaction.atomic(), acting_as(actor):
        for customer in customers:
            before = (customer.status, customer.suspension_reason)
            after = service(customer, actor=actor)
            if (after.status, after.suspension_reason) != before:
                changed.append(after)
    return changed


def successor_username(username: str) -> str:
    """A free username for the credential that replaces ``username`` during
    an overlapping rotation: ``acme`` -> ``acme-r2`` -> ``acme-r3``…"""
    base = re.sub(r"-r[0-9]+$", "", username)[:140]
    n = 2
    while Credential.objects.annotate(lower=Lower("username")).filter(lower=f"{base}-r{n}".lower()).exists():
        n += 1
    return f"{base}-r{n}"


def rotate_credential_with_overlap(
    credential: Credential,
    *,
    actor: Actor,
    old_works_until: datetime,
    username: str | None = None,
    expires_at: datetime | None = None,
) -> IssuedCredential:
    """Issue a replacement credential while the old one keeps working until
    ``old_works_until`` (at most 7 days away).

    Apache uses the first line that names a user, so one username cannot
    carry two working hashes. The new secret therefore gets a new credential
    with a new username, and the old credential gets ``expires_at``: both
    are in the tier file until then, and ``sync_htpasswd`` (run every
    minute) drops the old line once its time has passed.
    """
    now = timezone.now()
    if not now < old_works_until <= now + MAX_ROTATION_OVERLAP:
        raise ValidationError("The old secret can keep working for at most 7 days, ending in the future.",
                              code="invalid_overlap")
    if expires_at is not None and expires_at <= now:
        raise ValidationError("The new credential's expiry must be in the future.", code="invalid_expiry")
    secret = passwords.generate_secret()
    new_hash = hash_password(secret)
    with transaction.atomic():
        old = Credential.objects.select_for_update().select_related("customer__tier").get(pk=credential.pk)
        if not old.is_usable(now):
            raise ValidationError(
                f"{old.username} is revoked or expired; rotate it without overlap or issue a new credential.",
                code="not_usable",
            )
        why = f"rotation with overlap: {old.username} works until {old_works_until.isoformat(timespec='seconds')}"
        with acting_as(replace(actor, reason="; ".join(filter(None, [actor.reason, why])))):
            new_username = validate_username(username) if username else successor_username(old.username)
            new = Credential.objects.create(
                customer=old.customer, username=new_username, password_hash=new_hash, label=old.label,
                expires_at=expires_at,
            )
            if old.expires_at is None or old.expires_at > old_works_until:
                old.expires_at = old_works_until
                old.save(update_fields=["expires_at"])
            sync.schedule_rebuild([old.customer.tier.slug])
    return IssuedCredential(new, secret)


# --- Bulk imports ------------------------------------------------------------------------------
# importing.py reads, checks and plans (no writes); these apply a plan. Imported
# here, beside its only users, to keep this section self-contained.
from . import importing  # noqa: E402


def apply_customer_import(
    prepared: importing.PreparedImport, *, actor: Actor, credentials_out=None
) -> importing.CustomerPlan:
    """Apply a checked customer import in one transaction; rewrite each
    affected tier file once, on commit.

    The plan is made again from a locked snapshot, reusing the bcrypt work
    already done, so a change made since the file was checked is seen (and
    may make the import fail) rather than overwritten. Generated secrets are
    written to ``credentials_out`` before the commit, and removed if the
    transaction does not commit, so no credential exists whose secret is lost.
    """
    committed = []
    written = False
    try:
        with transaction.atomic(), acting_as(actor):
            transaction.on_commit(lambda: committed.append(True))
            rows = prepared.rows
            plan = importing.plan_customer_import(
                rows,
                importing.snapshot_for(rows, lock=True),
                prepared.hasher,
                can_generate=credentials_out is not None,
                source=prepared.source,
            )
            if plan.problems:
                raise importing.ImportFailed(plan.problems)
            importing.write_changes(plan.changes)
            if plan.generated:
                importing.write_credentials_file(credentials_out, plan.generated)
                written = True
            # Tiers that gain entries first, so a customer moving tier is
            # never in neither file.
            sync.schedule_rebuild(plan.changes.gaining_tiers)
            sync.schedule_rebuild([s for s in plan.changes.losing_tiers if s not in plan.changes.gaining_tiers])
    except BaseException:
        if written and not committed:
            credentials_out.unlink(missing_ok=True)
        raise
    return plan


def adopt_htpasswd(
    tier: Tier, entries: list[importing.HtpasswdEntry], *, actor: Actor, source: str, skip_conflicts: bool = False
) -> importing.AdoptionPlan:
    """Adopt an existing htpasswd file's users into ``tier``, keeping their
    hashes, in one transaction with one rewrite of the tier file."""
    with transaction.atomic(), acting_as(actor):
        plan = importing.plan_htpasswd_adoption(tier, entries, source=source, skip_conflicts=skip_conflicts, lock=True)
        if plan.problems:
            raise importing.ImportFailed(plan.problems)
        importing.write_changes(plan.changes)
        sync.schedule_rebuild(plan.changes.gaining_tiers)
    return plan
