"""Who may pull what: tiers, customers, their credentials, and the records
of every change to that (audit) and every billing event received.

The database is the truth; the per-tier htpasswd files are derived from it
(see ``sync.py``). Invariants that protect those files are enforced by
database constraints as well as by validation, so that a plain ORM call in
``manage.py shell`` cannot break them either.
"""
from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.db.models.functions import Lower
from django.utils import timezone

from . import htpasswd

# \A and \Z, not ^ and $: in Python (and so in SQLite's REGEXP and Django's
# RegexValidator) $ also matches before a final newline, which would let
# "bob\n" through. PostgreSQL reads \A and \Z the same way.
TIER_SLUG_PATTERN = r"\A[a-z0-9][a-z0-9-]*\Z"
USERNAME_REGEX = rf"\A{htpasswd.USERNAME_PATTERN}\Z"
# Printable ASCII except space and ':', like every hash format we accept.
HASH_REGEX = r"\A[!-9;-~]+\Z"

username_validator = RegexValidator(
    USERNAME_REGEX,
    "Use 1 to 150 letters, digits or . _ @ + -, starting with a letter or digit.",
)


class TrackedModel(models.Model):
    """A model whose ``tracked_fields`` the receivers compare before and
    after each save, to know whether it changed who is entitled (and so
    which tier files to rewrite) and what to write in the audit trail.

    The "before" is read from the database just before the save
    (``receivers.read_stored_state``), not remembered from when the instance
    was loaded: another process may have changed the row since, and an
    instance built by hand was never loaded at all.
    """

    tracked_fields: tuple[str, ...] = ()

    class Meta:
        abstract = True

    def current_state(self) -> dict:
        return {name: getattr(self, name) for name in self.tracked_fields}

    @property
    def stored_state(self) -> dict | None:
        """The tracked values as stored before this save; None for a new row."""
        return getattr(self, "_stored_state", None)


class Tier(models.Model):
    slug = models.SlugField(
        max_length=50,
        unique=True,
        validators=[RegexValidator(TIER_SLUG_PATTERN, "Use lowercase letters, digits and '-'.")],
        help_text="Names the tier's file, HTPASSWD_DIR/<slug>.htpasswd, and its Apache provider.",
    )
    name = models.CharField(max_length=100, help_text="Shown to staff, e.g. “Enterprise”.")
    description = models.TextField(blank=True, default="")
    position = models.PositiveIntegerField(
        default=0,
        help_text="Order of this tier's file in the proxy's provider list (lowest first).",
    )
    repository_prefixes = models.TextField(
        blank=True,
        default="",
        help_text=(
            "Repository prefixes reserved for this tier, one per line (e.g. example/faktory-ent). "
            "Leave empty to reach every repository no other tier reserves."
        ),
    )
    includes = models.ManyToManyField(
        "self",
        symmetrical=False,
        blank=True,
        related_name="included_by",
        help_text="Customers of this tier may also pull the repositories reserved for these tiers.",
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["position", "slug"]
        constraints = [
            models.CheckConstraint(condition=models.Q(slug__regex=TIER_SLUG_PATTERN), name="tier_slug_format"),
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        # The proxy config is rendered from these; catch a bad prefix here,
        # in the admin form, rather than when the operator renders it.
        from .proxyconf import ProxyConfigError, validate_prefix

        errors = []
        for prefix in self.prefixes:
            try:
                validate_prefix(prefix, self.slug)
            except ProxyConfigError as exc:
                errors.append(str(exc))
        if errors:
            raise ValidationError({"repository_prefixes": errors})

    @property
    def prefixes(self) -> list[str]:
        return [line.strip().strip("/") for line in self.repository_prefixes.splitlines() if line.strip()]

    @property
    def file_name(self) -> str:
        return f"{self.slug}.htpasswd"


class CustomerStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    SUSPENDED = "suspended", "Suspended"
    REVOKED = "revoked", "Revoked"


class PaymentStatus(models.TextChoices):
    CURRENT = "current", "Current"
    PAST_DUE = "past_due", "Past due"
    UNPAID = "unpaid", "Unpaid"
    CANCELED = "canceled", "Canceled"


class SuspensionReason(models.TextChoices):
    NONE = "", "—"
    STAFF = "staff", "By staff"
    NONPAYMENT = "nonpayment", "Non-payment"


class Customer(TrackedModel):
    Status = CustomerStatus
    PaymentStatus = PaymentStatus
    SuspensionReason = SuspensionReason

    tracked_fields = ("status", "tier_id", "payment_status", "suspension_reason")

    name = models.CharField(max_length=200)
    email = models.EmailField(unique=True, help_text="Unique; the key for imports and billing.")
    tier = models.ForeignKey(Tier, on_delete=models.PROTECT, related_name="customers")
    status = models.CharField(
        max_length=16,
        choices=Status.choices,
        default=Status.ACTIVE,
        help_text="Only active customers are in their tier's file.",
    )
    payment_status = models.CharField(max_length=16, choices=PaymentStatus.choices, default=PaymentStatus.CURRENT)
    suspension_reason = models.CharField(
        max_length=16,
        choices=SuspensionReason.choices,
        blank=True,
        default="",
        help_text="Why a suspended customer is suspended. Only non-payment is lifted by a later payment.",
    )
    past_due_since = models.DateTimeField(
        null=True, blank=True, help_text="When payment became past due; starts the grace period."
    )
    stripe_customer_id = models.CharField(
        max_length=255, null=True, blank=True, unique=True, help_text="Stripe's cus_… id, if billed through Stripe."
    )
    last_billing_event_at = models.DateTimeField(
        null=True, blank=True, editable=False, help_text="Creation time of the last Stripe event applied."
    )
    needs_review = models.BooleanField(
        default=False, help_text="Placeholder details (e.g. from an adopted htpasswd file) that staff should complete."
    )
    notes = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        # Checked by the admin actions themselves (see customers/permissions.py),
        # so a group without one cannot act even by posting the action directly.
        permissions = [
            ("suspend_customer", "Can suspend customers"),
            ("revoke_customer", "Can revoke customers"),
            ("reactivate_customer", "Can reactivate customers"),
        ]
        constraints = [
            models.UniqueConstraint(Lower("email"), name="customer_email_ci_unique"),
            models.CheckConstraint(condition=models.Q(status__in=CustomerStatus.values), name="customer_status_valid"),
            models.CheckConstraint(
                condition=models.Q(payment_status__in=PaymentStatus.values), name="customer_payment_status_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} <{self.email}>"

    def save(self, *args, **kwargs):
        # An empty Stripe id from a form must be NULL, or two customers
        # without one would collide on the unique index.
        if not self.stripe_customer_id:
            self.stripe_customer_id = None
        self.email = self.email.strip()
        # The grace period counts from past_due_since, so keep it in step
        # with payment_status however that changed (billing, the admin's
        # change form, the shell).
        if self.payment_status == PaymentStatus.PAST_DUE:
            self.past_due_since = self.past_due_since or timezone.now()
        else:
            self.past_due_since = None
        update_fields = kwargs.get("update_fields")
        if update_fields is not None and "payment_status" in update_fields:
            kwargs["update_fields"] = {*update_fields, "past_due_since"}
        super().save(*args, **kwargs)

    @property
    def is_entitled(self) -> bool:
        return self.status == self.Status.ACTIVE


def usable_condition(now=None, prefix: str = "") -> models.Q:
    """A credential that is neither revoked nor expired (``prefix`` to use it
    across a relation, e.g. ``"credentials__"``)."""
    now = now or timezone.now()
    return models.Q(**{f"{prefix}revoked_at__isnull": True}) & (
        models.Q(**{f"{prefix}expires_at__isnull": True}) | models.Q(**{f"{prefix}expires_at__gt": now})
    )


class CredentialQuerySet(models.QuerySet):
    def usable(self, now=None):
        """Credentials that are neither revoked nor expired."""
        return self.filter(usable_condition(now))

    def entitled(self, now=None):
        """Credentials that belong in a tier file right now."""
        return self.usable(now).filter(customer__status=Customer.Status.ACTIVE)


class Credential(TrackedModel):
    tracked_fields = ("customer_id", "username", "password_hash", "expires_at", "revoked_at")

    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="credentials")
    username = models.CharField(
        max_length=150,
        validators=[username_validator],
        help_text="What the customer types in `docker login`. Unique across all tiers, ignoring case.",
    )
    password_hash = models.CharField(max_length=255, help_text="The htpasswd hash. The secret itself is never stored.")
    label = models.CharField(max_length=100, blank=True, default="", help_text="e.g. “CI” or “laptop”.")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    rotated_at = models.DateTimeField(null=True, blank=True, editable=False)
    expires_at = models.DateTimeField(
        null=True, blank=True, help_text="After this moment the credential drops out of the tier file."
    )
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects = CredentialQuerySet.as_manager()

    class Meta:
        ordering = ["username"]
        permissions = [
            ("rotate_credential", "Can issue and rotate credentials"),
            ("revoke_credential", "Can revoke single credentials"),
        ]
        constraints = [
            models.UniqueConstraint(Lower("username"), name="credential_username_ci_unique"),
            models.CheckConstraint(condition=models.Q(username__regex=USERNAME_REGEX), name="credential_username_format"),
            models.CheckConstraint(
                condition=models.Q(password_hash__regex=HASH_REGEX),
                name="credential_hash_format",
            ),
        ]

    def __str__(self) -> str:
        return self.username

    def is_usable(self, now=None) -> bool:
        now = now or timezone.now()
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)


class AuditEvent(models.Model):
    """One change of entitlement: who, what from what to what, and when."""

    class ActorKind(models.TextChoices):
        STAFF = "staff", "Staff"
        WEBHOOK = "webhook", "Billing webhook"
        COMMAND = "command", "Management command"
        SHELL = "shell", "Shell / direct ORM"
        SYSTEM = "system", "System"

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    actor_kind = models.CharField(max_length=16, choices=ActorKind.choices)
    actor_user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    actor_label = models.CharField(max_length=200, blank=True, default="", help_text="Staff username, event id or command.")
    customer = models.ForeignKey(Customer, null=True, blank=True, on_delete=models.SET_NULL, related_name="audit_events")
    customer_label = models.CharField(max_length=300, blank=True, default="", help_text="Kept when the customer is deleted.")
    action = models.CharField(max_length=40, db_index=True)
    changes = models.JSONField(default=dict, blank=True, help_text='{"field": [old, new]}')
    reason = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M} {self.actor_kind}:{self.actor_label} {self.action} {self.customer_label}"


class BillingEvent(models.Model):
    """A Stripe event as delivered, stored once under its event id."""

    class Result(models.TextChoices):
        PROCESSED = "processed", "Processed"
        IGNORED = "ignored", "Ignored"
        FAILED = "failed", "Failed"

    stripe_event_id = models.CharField(max_length=255, unique=True)
    type = models.CharField(max_length=100, db_index=True)
    event_created_at = models.DateTimeField(null=True, blank=True, help_text="The event's own `created` time.")
    payload = models.JSONField()
    customer = models.ForeignKey(Customer, null=True, blank=True, on_delete=models.SET_NULL, related_name="billing_events")
    received_at = models.DateTimeField(default=timezone.now)
    processed_at = models.DateTimeField(null=True, blank=True)
    result = models.CharField(max_length=16, choices=Result.choices, blank=True, default="")
    note = models.TextField(blank=True, default="", help_text="What the event did, or why it was ignored.")
    error = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["-received_at", "-id"]

    def __str__(self) -> str:
        return f"{self.stripe_event_id} {self.type}"


def this_server() -> str:
    return settings.NODE_NAME


class TierFileStatusQuerySet(models.QuerySet):
    def on_this_server(self):
        return self.filter(host=this_server())


class TierFileStatus(models.Model):
    """The outcome of the last attempt to write one tier file on one server.

    A failed write must never be silent: the database change stays committed
    (it is the truth), and this row lets the admin banner and /healthz show
    the failure until a later write succeeds. Each server writes its own
    copy of the files, so each keeps its own rows: one server's full disk
    must not make every server's /healthz fail, nor be "cleared" by another
    server's successful write.
    """

    host = models.CharField(
        max_length=255, default=this_server, help_text="The server that writes this copy (NODE_NAME)."
    )
    tier_slug = models.CharField(max_length=50)
    entries = models.PositiveIntegerField(default=0)
    last_written_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    last_error_at = models.DateTimeField(null=True, blank=True)

    objects = TierFileStatusQuerySet.as_manager()

    class Meta:
        verbose_name_plural = "tier file statuses"
        ordering = ["host", "tier_slug"]
        constraints = [models.UniqueConstraint(fields=["host", "tier_slug"], name="tier_file_status_per_host")]

    def __str__(self) -> str:
        return f"{self.host}:{self.tier_slug}: {'error' if self.last_error else 'ok'}"
