"""Stripe events -> services: a dict from event type to handler.

The webhook view verifies the signature and hands the parsed event to
``receive``. Every delivered event is stored once, under its Stripe id, in
the same transaction as its effect, so an event is either recorded *and*
applied or neither. Handlers set state from the object in the payload
(``subscription.status``) rather than toggling it, and an event older than
the last one applied to its customer is ignored, because Stripe neither
guarantees order nor delivers only once.
"""
from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from typing import Any

from django.conf import settings
from django.db import DataError, IntegrityError, transaction
from django.utils import timezone

from . import services
from .audit import Actor
from .models import BillingEvent, Customer, Tier

logger = logging.getLogger(__name__)

# Stripe's own default: a signature older than this is a replay.
SIGNATURE_TOLERANCE = 300

Result = BillingEvent.Result
DUPLICATE = "duplicate"  # an outcome only: a repeated delivery stores nothing new


class InvalidEvent(ValueError):
    """A correctly signed body that is not a Stripe event we can store."""


@dataclass(frozen=True)
class Delivery:
    """What a handler needs from one event."""

    event_id: str
    type: str
    created_at: datetime
    obj: dict[str, Any]
    actor: Actor


@dataclass(frozen=True)
class Outcome:
    result: str  # a BillingEvent.Result, or DUPLICATE
    note: str
    event: BillingEvent

    @property
    def http_status(self) -> int:
        # A failure must be retried by Stripe; everything else is settled.
        return 500 if self.result == Result.FAILED else 200

    def as_json(self) -> dict[str, str]:
        return {"result": self.result, "note": self.note, "event": self.event.stripe_event_id}


# --- Handlers: each moves one customer and returns it ------------------------------------


def payment_failed(customer: Customer, delivery: Delivery) -> Customer:
    return services.record_payment_failed(customer, actor=delivery.actor, since=delivery.created_at)


def invoice_paid(customer: Customer, delivery: Delivery) -> Customer:
    return services.record_payment(customer, actor=delivery.actor)


def subscription_updated(customer: Customer, delivery: Delivery) -> Customer:
    status = delivery.obj.get("status")
    if not isinstance(status, str):
        raise ValueError("the subscription in the event has no status")
    return services.apply_subscription_status(
        customer, status, actor=delivery.actor, tier=tier_from_subscription(delivery.obj), since=delivery.created_at
    )


def subscription_deleted(customer: Customer, delivery: Delivery) -> Customer:
    return services.cancel_subscription(customer, actor=delivery.actor)


Handler = Callable[[Customer, Delivery], Customer]

HANDLERS: dict[str, Handler] = {
    "invoice.payment_failed": payment_failed,
    "invoice.paid": invoice_paid,
    "customer.subscription.updated": subscription_updated,
    "customer.subscription.deleted": subscription_deleted,
}


def tier_from_subscription(subscription: dict[str, Any]) -> Tier | None:
    """The tier named by the first item's price ``lookup_key``, if any.

    The key is a tier slug, or a slug, a dot and anything (``pro.yearly``):
    Stripe wants lookup keys unique, so a tier sold at several prices needs
    several keys. Slugs never contain a dot, so the part before the first
    dot is the slug in both cases.
    """
    try:
        lookup_key = subscription["items"]["data"][0]["price"]["lookup_key"]
    except (KeyError, IndexError, TypeError):
        return None
    if not isinstance(lookup_key, str) or not lookup_key:
        return None
    return Tier.objects.filter(slug=lookup_key.split(".", 1)[0]).first()


# --- Parsing ----------------------------------------------------------------------------------


def parse_event(data: Any) -> dict[str, Any]:
    """Check that a verified, JSON-decoded body is a Stripe event we can
    store; raise InvalidEvent if not (the view answers 400)."""
    if not isinstance(data, dict) or data.get("object") != "event":
        raise InvalidEvent("the body is not a Stripe event object")
    event_id, event_type, created = data.get("id"), data.get("type"), data.get("created")
    if not isinstance(event_id, str) or not 0 < len(event_id) <= 255:
        raise InvalidEvent("the event has no valid id")
    if not isinstance(event_type, str) or not 0 < len(event_type) <= 100:
        raise InvalidEvent("the event has no valid type")
    if isinstance(created, bool) or not isinstance(created, int):
        raise InvalidEvent("the event has no valid created time")
    try:
        _timestamp(created)
    except (OverflowError, OSError, ValueError):
        raise InvalidEvent("the event's created time is out of range") from None
    event_data = data.get("data")
    if not isinstance(event_data, dict) or not isinstance(event_data.get("object"), dict):
        raise InvalidEvent("the event has no data.object")
    return data


def _timestamp(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, tz=dt_timezone.utc)


def stripe_customer_id(obj: dict[str, Any]) -> str | None:
    """The ``customer`` of an event's object: an id, or an expanded customer."""
    value = obj.get("customer")
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


# --- Receiving and processing -----------------------------------------------------------------


def receive(data: dict[str, Any]) -> Outcome:
    """Store a delivered event under its id and apply it, in one transaction.

    A repeated delivery of a processed or ignored event does nothing. A
    repeated delivery of a *failed* one (Stripe retrying after our 500) is
    processed again.
    """
    data = parse_event(data)
    with transaction.atomic():
        try:
            # A savepoint, so that a duplicate id leaves the transaction usable.
            # Two deliveries racing: on PostgreSQL the second insert waits for
            # the first to commit, then fails here and finds its row.
            with transaction.atomic():
                stored = BillingEvent.objects.create(
                    stripe_event_id=data["id"],
                    type=data["type"],
                    event_created_at=_timestamp(data["created"]),
                    payload=data,
                )
        except IntegrityError:
            stored = BillingEvent.objects.select_for_update().get(stripe_event_id=data["id"])
            if stored.result != Result.FAILED:
                return Outcome(DUPLICATE, f"already received ({stored.result or 'in progress'})", stored)
        except DataError as exc:  # e.g. a \u0000 that PostgreSQL's jsonb refuses
            logger.warning("Stripe event %s cannot be stored: %s", data["id"], exc)
            raise InvalidEvent("the event cannot be stored (the database refused its content)") from exc
        return _process(stored, Actor.webhook(stored.stripe_event_id, reason=stored.type))


def reprocess(event: BillingEvent, *, actor: Actor | None = None) -> Outcome:
    """Apply a failed event again (the admin's action). Other events are
    left alone: they were applied or deliberately ignored."""
    with transaction.atomic():
        stored = BillingEvent.objects.select_for_update().get(pk=event.pk)
        if stored.result != Result.FAILED:
            return Outcome(stored.result, "not reprocessed: only failed events are", stored)
        actor = actor or Actor.webhook(stored.stripe_event_id, reason=stored.type)
        return _process(stored, actor)


def _process(stored: BillingEvent, actor: Actor) -> Outcome:
    """Apply a stored event; record the result on it. Runs inside the
    transaction that stored (or locked) the event."""
    obj = stored.payload["data"]["object"]
    handler = HANDLERS.get(stored.type)
    customer_id = stripe_customer_id(obj)
    customers = Customer.objects.filter(stripe_customer_id=customer_id) if customer_id else Customer.objects.none()
    if handler is not None:
        # Locking the customer serialises the events applied to it, so the
        # age check below and the update of last_billing_event_at cannot
        # interleave with another delivery's.
        customers = customers.select_for_update()
    customer = customers.first()
    stored.customer = customer
    stored.error = ""
    if handler is None:
        result, note = Result.IGNORED, f"event type {stored.type} is not used"
    elif customer_id is None:
        result, note = Result.IGNORED, "the event names no customer"
    elif customer is None:
        result, note = Result.IGNORED, f"no customer has the Stripe id {customer_id}"
    elif customer.last_billing_event_at and stored.event_created_at < customer.last_billing_event_at:
        result = Result.IGNORED
        note = (
            f"older than the last event applied to this customer "
            f"({customer.last_billing_event_at:%Y-%m-%d %H:%M:%S} UTC); state comes from the newer one"
        )
    else:
        delivery = Delivery(stored.stripe_event_id, stored.type, stored.event_created_at, obj, actor)
        try:
            # Its own savepoint: a failing handler leaves no partial change,
            # while the event row (with the error) is still committed.
            with transaction.atomic():
                before = _snapshot(customer)
                after = handler(customer, delivery)
                services.note_billing_event_applied(after, stored.event_created_at)
            result, note = Result.PROCESSED, describe_effect(before, after, stored.type)
        except Exception as exc:  # noqa: BLE001 - any failure is kept for staff and retried by Stripe
            logger.exception("Stripe event %s (%s) failed", stored.stripe_event_id, stored.type)
            result, note = Result.FAILED, f"handler failed: {type(exc).__name__}: {exc}"
            stored.error = traceback.format_exc()
    stored.result, stored.note, stored.processed_at = result, note, timezone.now()
    stored.save(update_fields=["customer", "result", "note", "error", "processed_at"])
    return Outcome(result, note, stored)


# --- Notes for staff --------------------------------------------------------------------------


def _snapshot(customer: Customer) -> dict[str, str]:
    return {
        "payment": customer.payment_status,
        "access": customer.status,
        "reason": customer.suspension_reason,
        "tier": customer.tier.slug,
    }


def describe_effect(before: dict[str, str], after: Customer, event_type: str) -> str:
    """What the event did, in words staff read in the admin."""
    now = _snapshot(after)
    parts = [f"{key} {before[key]} → {now[key]}" for key in ("payment", "access", "tier") if before[key] != now[key]]
    if now["access"] == before["access"]:
        parts.append(f"access unchanged ({now['access']})")
    if now["payment"] == Customer.PaymentStatus.PAST_DUE and now["access"] == Customer.Status.ACTIVE:
        if after.past_due_since:
            until = after.past_due_since + timedelta(days=settings.GRACE_PERIOD_DAYS)
            parts.append(f"grace period until {until:%Y-%m-%d %H:%M} UTC")
    reinstating = event_type == "invoice.paid" or now["payment"] == Customer.PaymentStatus.CURRENT
    if reinstating and now["access"] == Customer.Status.REVOKED:
        parts.append("revoked customers are reinstated only by staff")
    if reinstating and now["access"] == Customer.Status.SUSPENDED and now["reason"] == Customer.SuspensionReason.STAFF:
        parts.append("suspended by staff, so a payment does not lift it")
    return "; ".join(parts)
