"""What a customer's admin page shows about billing: the Stripe events
received for them, and what billing did to their access.

Rendered as read-only tables (admin ``readonly_fields``) rather than
inlines: an inline is a formset, and every POST of the change form would
then have to carry its management form, although nothing in it is editable.
"""
from __future__ import annotations

from django.db.models import Q
from django.urls import reverse
from django.utils.http import urlencode
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from .models import AuditEvent, Customer

# The newest rows; the link under each table leads to all of them.
LIMIT = 25

# Audit records written by billing: a Stripe event (delivered, or reprocessed
# by staff) or the grace period running out.
BY_BILLING = Q(actor_kind=AuditEvent.ActorKind.WEBHOOK) | Q(
    actor_kind=AuditEvent.ActorKind.COMMAND, actor_label="suspend_lapsed"
)


def _when(value) -> str:
    return f"{timezone.localtime(value):%Y-%m-%d %H:%M:%S}" if value else "—"


def _table(headers: tuple[str, ...], rows: SafeString, more: SafeString | str) -> SafeString:
    head = format_html_join("", "<th>{}</th>", ((h,) for h in headers))
    return format_html("<table><thead><tr>{}</tr></thead><tbody>{}</tbody></table>{}", head, rows, more)


def payment_history(customer: Customer) -> SafeString | str:
    if customer.pk is None:
        return "—"
    events = list(customer.billing_events.order_by("-event_created_at", "-id")[: LIMIT + 1])
    if not events:
        return "No Stripe event has been received for this customer."
    rows = format_html_join(
        "",
        '<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><a href="{}">{}</a></td></tr>',
        (
            (
                _when(e.event_created_at),
                e.type,
                e.get_result_display(),
                e.note,
                reverse("admin:customers_billingevent_change", args=[e.pk]),
                e.stripe_event_id,
            )
            for e in events[:LIMIT]
        ),
    )
    more = ""
    if len(events) > LIMIT:
        url = reverse("admin:customers_billingevent_changelist") + "?" + urlencode({"q": customer.email})
        more = format_html('<p><a href="{}">All Stripe events for this customer</a></p>', url)
    return _table(("created (Stripe)", "event", "result", "what it did", "event id"), rows, more)


def billing_access_changes(customer: Customer) -> SafeString | str:
    if customer.pk is None:
        return "—"
    records = list(AuditEvent.objects.filter(BY_BILLING, customer=customer)[: LIMIT + 1])
    if not records:
        return "Billing has not changed this customer."
    rows = format_html_join(
        "",
        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
        (
            (
                _when(r.created_at),
                r.actor_label + (f" (by {r.actor_user})" if r.actor_user_id else ""),
                r.action,
                "; ".join(f"{field}: {old} → {new}" for field, (old, new) in r.changes.items()),
                r.reason,
            )
            for r in records[:LIMIT]
        ),
    )
    more = ""
    if len(records) > LIMIT:
        url = reverse("admin:customers_auditevent_changelist") + "?" + urlencode({"q": customer.email})
        more = format_html('<p><a href="{}">The whole audit trail</a></p>', url)
    return _table(("when", "by", "action", "changes", "reason"), rows, more)

