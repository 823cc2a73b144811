"""Who is acting, and the audit trail of entitlement changes.

The audit record is written from the model's own change (see
``receivers.py``), not by each caller, so a change made through the admin's
change form or a plain ``customer.save()`` in ``manage.py shell`` is
recorded exactly like one made by a service. Callers only say who they are,
with ``acting_as``; anything that does not is recorded as the shell.
"""
from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .models import AuditEvent, Credential, Customer, Tier


@dataclass(frozen=True)
class Actor:
    kind: str
    label: str = ""
    user: Any = None
    reason: str = ""

    @classmethod
    def staff(cls, user, reason: str = "") -> Actor:
        return cls(AuditEvent.ActorKind.STAFF, user.get_username(), user, reason)

    @classmethod
    def webhook(cls, event_id: str, reason: str = "") -> Actor:
        return cls(AuditEvent.ActorKind.WEBHOOK, event_id, None, reason)

    @classmethod
    def command(cls, name: str, reason: str = "") -> Actor:
        return cls(AuditEvent.ActorKind.COMMAND, name, None, reason)

    @classmethod
    def system(cls, label: str, reason: str = "") -> Actor:
        return cls(AuditEvent.ActorKind.SYSTEM, label, None, reason)


SHELL = Actor(AuditEvent.ActorKind.SHELL, "shell")
_current_actor: contextvars.ContextVar[Actor] = contextvars.ContextVar("registry_admin_actor", default=SHELL)
_customers_being_deleted: contextvars.ContextVar[frozenset[int]] = contextvars.ContextVar(
    "registry_admin_deleting", default=frozenset()
)


def current_actor() -> Actor:
    return _current_actor.get()


@contextlib.contextmanager
def acting_as(actor: Actor) -> Iterator[Actor]:
    token = _current_actor.set(actor)
    try:
        yield actor
    finally:
        _current_actor.reset(token)


def _diff(before: dict[str, Any] | None, after: dict[str, Any]) -> dict[str, list[Any]]:
    if before is None:
        return {}
    return {
        name: [_jsonable(before[name]), _jsonable(value)]
        for name, value in after.items()
        if before.get(name) != value
    }


def _jsonable(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value


def _readable(changes: dict[str, list[Any]]) -> dict[str, list[Any]]:
    # Staff read tier slugs, not primary keys.
    if "tier_id" in changes:
        slugs = dict(Tier.objects.filter(pk__in=[v for v in changes["tier_id"] if v]).values_list("pk", "slug"))
        changes["tier"] = [slugs.get(v) for v in changes.pop("tier_id")]
    return changes


def _customer_action(changes: dict[str, list[Any]]) -> str:
    if "status" in changes:
        return {"active": "reactivated", "suspended": "suspended", "revoked": "revoked"}[changes["status"][1]]
    if "tier_id" in changes:
        return "tier_changed"
    if "payment_status" in changes:
        return "payment_status_changed"
    return "updated"


def _credential_action(changes: dict[str, list[Any]]) -> str:
    if changes.get("revoked_at", [None, None])[1] is not None:
        return "credential_revoked"
    if "password_hash" in changes:
        return "credential_rotated"
    if "expires_at" in changes:
        return "credential_expiry_changed"
    if "revoked_at" in changes:
        return "credential_restored"
    return "credential_updated"


def _record(action: str, customer: Customer | None, label: str, changes: dict[str, Any]) -> AuditEvent:
    actor = current_actor()
    return AuditEvent.objects.create(
        actor_kind=actor.kind,
        actor_label=actor.label,
        actor_user=actor.user,
        customer=customer,
        customer_label=label,
        action=action,
        changes=changes,
        reason=actor.reason,
    )


def record_customer_saved(customer: Customer, created: bool, before: dict[str, Any] | None) -> None:
    after = customer.current_state()
    if created:
        changes = {name: [None, _jsonable(value)] for name, value in after.items()}
        _record("created", customer, str(customer), _readable(changes))
        return
    changes = _diff(before, after)
    if changes:
        action = _customer_action(changes)
        _record(action, customer, str(customer), _readable(changes))


def record_credential_saved(credential: Credential, created: bool, before: dict[str, Any] | None) -> None:
    customer = credential.customer
    if created:
        changes = {"username": [None, credential.username]}
        if credential.expires_at:
            changes["expires_at"] = [None, _jsonable(credential.expires_at)]
        _record("credential_issued", customer, str(customer), changes)
        return
    changes = _diff(before, credential.current_state())
    if "password_hash" in changes:
        # Never copy hashes into the audit trail; that the hash changed is enough.
        changes["password_hash"] = ["…", "…"]
    if changes:
        changes.setdefault("username", [credential.username, credential.username])
        _record(_credential_action(changes), customer, str(customer), changes)


def customer_deletion_started(customer: Customer) -> None:
    _customers_being_deleted.set(_customers_being_deleted.get() | {customer.pk})


def record_customer_deleted(customer: Customer) -> None:
    _customers_being_deleted.set(_customers_being_deleted.get() - {customer.pk})
    # The row is gone, so the event keeps only the label.
    _record("deleted", None, str(customer), {"status": [customer.status, None]})


def record_credential_deleted(credential: Credential) -> None:
    if credential.customer_id in _customers_being_deleted.get():
        return  # covered by the customer's own "deleted" record
    customer = Customer.objects.filter(pk=credential.customer_id).first()
    _record("credential_deleted", customer, str(customer or ""), {"username": [credential.username, None]})
