"""POST /webhooks/stripe/ with payloads signed as Stripe signs them: each
event moves the customer as the contract says, the tier files follow, and
anything unsigned, forged, stale or malformed changes nothing."""
from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from customers import billing, services
from customers.models import AuditEvent, BillingEvent, Customer

from .conftest import COMMAND, apache_verifies, file_users
from .stripe_helpers import event, invoice, post, post_http, sign, stripe_secret, subscription  # noqa: F401

pytestmark = pytest.mark.django_db(transaction=True)

CUS = "cus_test_acme"


@pytest.fixture
def customer(tiers, stripe_secret) -> Customer:
    customer = services.create_customer(
        name="Acme", email="ops@acme.io", tier=tiers["pro"], actor=COMMAND, stripe_customer_id=CUS
    )
    services.issue_credential(customer, actor=COMMAND, username="acme", password="pw-acme")
    return customer


def fresh(customer: Customer) -> Customer:
    return Customer.objects.get(pk=customer.pk)


def snapshot(directory) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.glob("*.htpasswd"))}


def state(customer: Customer) -> tuple:
    c = fresh(customer)
    return c.status, c.payment_status, c.suspension_reason, c.tier.slug, c.past_due_since


# --- Each event type -------------------------------------------------------------------------


def test_payment_failed_marks_past_due_and_keeps_access_for_the_grace_period(customer, client, htpasswd_dir):
    created = int(time.time()) - 3600
    response = post(client, event("invoice.payment_failed", invoice(CUS, paid=False), created=created))
    assert response.status_code == 200, response.content
    assert response.json()["result"] == "processed"
    c = fresh(customer)
    assert (c.status, c.payment_status) == ("active", "past_due")
    # The grace period counts from when Stripe saw the failure, not from delivery.
    assert c.past_due_since == datetime.fromtimestamp(created, tz=dt_timezone.utc)
    assert apache_verifies(htpasswd_dir / "pro.htpasswd", "acme", "pw-acme")
    stored = BillingEvent.objects.get()
    assert (stored.result, stored.customer_id, stored.type) == ("processed", customer.pk, "invoice.payment_failed")
    assert "payment current → past_due" in stored.note and "grace period until" in stored.note


def test_invoice_paid_lifts_a_suspension_for_nonpayment(customer, client, htpasswd_dir):
    now = int(time.time())
    assert post(client, event("customer.subscription.updated", subscription(CUS, "unpaid"), created=now - 60)).status_code == 200
    assert (fresh(customer).status, fresh(customer).suspension_reason) == ("suspended", "nonpayment")
    assert file_users(htpasswd_dir, "pro") == []

    assert post(client, event("invoice.paid", invoice(CUS, paid=True), created=now)).status_code == 200
    c = fresh(customer)
    assert (c.status, c.payment_status, c.suspension_reason, c.past_due_since) == ("active", "current", "", None)
    assert apache_verifies(htpasswd_dir / "pro.htpasswd", "acme", "pw-acme")


def test_invoice_paid_does_not_lift_a_staff_suspension(customer, client, htpasswd_dir):
    services.record_payment_failed(customer, actor=COMMAND)
    services.suspend(customer, actor=COMMAND)  # by staff
    response = post(client, event("invoice.paid", invoice(CUS, paid=True)))
    assert response.status_code == 200
    c = fresh(customer)
    assert (c.status, c.suspension_reason, c.payment_status) == ("suspended", "staff", "current")
    assert file_users(htpasswd_dir, "pro") == []
    assert "suspended by staff" in BillingEvent.objects.get().note


def test_unpaid_does_not_turn_a_staff_suspension_into_one_payment_lifts(customer, client):
    services.suspend(customer, actor=COMMAND)
    now = int(time.time())
    post(client, event("customer.subscription.updated", subscription(CUS, "unpaid"), created=now - 1))
    post(client, event("invoice.paid", invoice(CUS, paid=True), created=now))
    assert (fresh(customer).status, fresh(customer).suspension_reason) == ("suspended", "staff")


@pytest.mark.parametrize(
    ("status", "access", "payment", "in_file"),
    [
        ("active", "active", "current", True),
        ("trialing", "active", "current", True),
        ("past_due", "active", "past_due", True),
        ("unpaid", "suspended", "unpaid", False),
        ("canceled", "revoked", "canceled", False),
        ("incomplete_expired", "revoked", "canceled", False),
    ],
)
def test_subscription_updated_follows_its_status(customer, client, htpasswd_dir, status, access, payment, in_file):
    response = post(client, event("customer.subscription.updated", subscription(CUS, status)))
    assert response.status_code == 200
    assert response.json()["result"] == "processed"
    c = fresh(customer)
    assert (c.status, c.payment_status) == (access, payment)
    assert file_users(htpasswd_dir, "pro") == (["acme"] if in_file else [])


def test_subscription_active_reinstates_after_unpaid(customer, client, htpasswd_dir):
    now = int(time.time())
    post(client, event("customer.subscription.updated", subscription(CUS, "unpaid"), created=now - 10))
    assert file_users(htpasswd_dir, "pro") == []
    post(client, event("customer.subscription.updated", subscription(CUS, "active"), created=now))
    assert fresh(customer).status == "active"
    assert apache_verifies(htpasswd_dir / "pro.htpasswd", "acme", "pw-acme")


def test_subscription_tier_follows_the_price_lookup_key(customer, client, htpasswd_dir):
    response = post(client, event("customer.subscription.updated", subscription(CUS, "active", lookup_key="enterprise")))
    assert response.status_code == 200
    assert fresh(customer).tier.slug == "enterprise"
    assert file_users(htpasswd_dir, "pro") == []
    assert apache_verifies(htpasswd_dir / "enterprise.htpasswd", "acme", "pw-acme")
    assert "tier pro → enterprise" in BillingEvent.objects.get().note


def test_lookup_key_may_carry_a_suffix_after_a_dot(customer, client, htpasswd_dir):
    post(client, event("customer.subscription.updated", subscription(CUS, "active", lookup_key="enterprise.yearly")))
    assert fresh(customer).tier.slug == "enterprise"
    assert file_users(htpasswd_dir, "enterprise") == ["acme"]


@pytest.mark.parametrize("lookup_key", ["no-such-tier", "no-such-tier.pro", ".pro", None, ""])
def test_lookup_key_that_names_no_tier_leaves_the_tier(customer, client, htpasswd_dir, lookup_key):
    post(client, event("customer.subscription.updated", subscription(CUS, "active", lookup_key=lookup_key)))
    assert fresh(customer).tier.slug == "pro"
    assert file_users(htpasswd_dir, "pro") == ["acme"]


def test_subscription_deleted_revokes(customer, client, htpasswd_dir):
    response = post(client, event("customer.subscription.deleted", subscription(CUS, "canceled")))
    assert response.status_code == 200
    c = fresh(customer)
    assert (c.status, c.payment_status) == ("revoked", "canceled")
    assert file_users(htpasswd_dir, "pro") == []


def test_webhook_changes_are_audited_as_the_event(customer, client):
    payload = event("customer.subscription.updated", subscription(CUS, "unpaid"))
    post(client, payload)
    audit = AuditEvent.objects.filter(customer=customer, action="suspended").get()
    assert (audit.actor_kind, audit.actor_label) == ("webhook", payload["id"])
    assert audit.changes["status"] == ["active", "suspended"]


# --- Revoked stays revoked; order and repetition -------------------------------------------------


@pytest.mark.parametrize(
    "later",
    [
        lambda: event("invoice.paid", invoice(CUS, paid=True), created=int(time.time())),
        lambda: event("customer.subscription.updated", subscription(CUS, "active"), created=int(time.time())),
    ],
    ids=["invoice.paid", "subscription.active"],
)
def test_billing_never_reinstates_a_revoked_customer(customer, client, htpasswd_dir, later):
    post(client, event("customer.subscription.deleted", subscription(CUS, "canceled"), created=int(time.time()) - 60))
    before = snapshot(htpasswd_dir)
    response = post(client, later())
    assert response.status_code == 200
    assert fresh(customer).status == "revoked"
    assert file_users(htpasswd_dir, "pro") == []
    assert snapshot(htpasswd_dir) == before
    assert "reinstated only by staff" in BillingEvent.objects.order_by("-id").first().note


def test_repeated_delivery_is_stored_once_and_applied_once(customer, client):
    payload = event("invoice.payment_failed", invoice(CUS, paid=False))
    first, second = post(client, payload), post(client, payload)
    assert (first.status_code, second.status_code) == (200, 200)
    assert second.json()["result"] == "duplicate"
    assert BillingEvent.objects.count() == 1
    assert AuditEvent.objects.filter(customer=customer, action="payment_status_changed").count() == 1


def test_replaying_an_event_after_later_events_changes_nothing(customer, client, htpasswd_dir):
    now = int(time.time())
    failed = event("customer.subscription.updated", subscription(CUS, "unpaid"), created=now - 120)
    paid = event("invoice.paid", invoice(CUS, paid=True), created=now - 60)
    assert post(client, failed).status_code == 200
    assert post(client, paid).status_code == 200
    before, files, audits = state(customer), snapshot(htpasswd_dir), AuditEvent.objects.count()
    assert before[0] == "active"

    response = post(client, failed)  # Stripe (or an attacker with an old capture) replays it, freshly signed
    assert response.status_code == 200
    assert response.json()["result"] == "duplicate"
    assert (state(customer), snapshot(htpasswd_dir), AuditEvent.objects.count()) == (before, files, audits)
    assert BillingEvent.objects.count() == 2


def test_invoice_paid_after_subscription_deleted_does_not_bring_the_customer_back(customer, client, htpasswd_dir):
    now = int(time.time())
    post(client, event("customer.subscription.deleted", subscription(CUS, "canceled"), created=now - 5))
    response = post(client, event("invoice.paid", invoice(CUS, paid=True), created=now))
    assert response.status_code == 200
    assert fresh(customer).status == "revoked"
    assert file_users(htpasswd_dir, "pro") == []


def test_older_past_due_arriving_after_newer_active_is_ignored(customer, client, htpasswd_dir):
    now = int(time.time())
    day = 24 * 3600
    # Ten days ago the payment failed; yesterday it was settled; the
    # past_due update from five days ago arrives only now.
    post(client, event("invoice.payment_failed", invoice(CUS, paid=False), created=now - 10 * day))
    post(client, event("customer.subscription.updated", subscription(CUS, "active"), created=now - day))
    late = post(client, event("customer.subscription.updated", subscription(CUS, "past_due"), created=now - 5 * day))

    assert late.status_code == 200
    assert late.json()["result"] == "ignored"
    assert "older than the last event applied" in late.json()["note"]
    c = fresh(customer)
    assert (c.status, c.payment_status, c.past_due_since) == ("active", "current", None)
    # And so the grace period cannot catch them either.
    assert services.suspend_lapsed(actor=COMMAND) == []
    assert apache_verifies(htpasswd_dir / "pro.htpasswd", "acme", "pw-acme")


def test_unknown_customer_is_recorded_as_ignored(customer, client):
    response = post(client, event("invoice.payment_failed", invoice("cus_nobody", paid=False)))
    assert response.status_code == 200
    assert response.json()["result"] == "ignored"
    stored = BillingEvent.objects.get()
    assert (stored.result, stored.customer) == ("ignored", None)
    assert "cus_nobody" in stored.note
    assert fresh(customer).payment_status == "current"


def test_unused_event_type_is_recorded_as_ignored(customer, client):
    response = post(client, event("charge.succeeded", {"id": "ch_1", "object": "charge", "customer": CUS}))
    assert response.status_code == 200
    stored = BillingEvent.objects.get()
    assert (stored.result, stored.type, stored.customer_id) == ("ignored", "charge.succeeded", customer.pk)


def test_expanded_customer_object_is_matched(customer, client):
    obj = invoice(CUS, paid=False)
    obj["customer"] = {"id": CUS, "object": "customer"}
    post(client, event("invoice.payment_failed", obj))
    assert fresh(customer).payment_status == "past_due"


def test_concurrent_deliveries_of_one_event_apply_it_once(customer, monkeypatch):
    payload = event("invoice.payment_failed", invoice(CUS, paid=False))
    entered, release = threading.Event(), threading.Event()
    real = billing.HANDLERS["invoice.payment_failed"]

    def slow(customer, delivery):
        entered.set()
        release.wait(10)
        return real(customer, delivery)

    monkeypatch.setitem(billing.HANDLERS, "invoice.payment_failed", slow)
    results: dict[str, str] = {}

    def deliver(name: str) -> None:
        try:
            results[name] = billing.receive(payload).result
        finally:
            connection.close()

    first = threading.Thread(target=deliver, args=("first",))
    first.start()
    assert entered.wait(10)
    second = threading.Thread(target=deliver, args=("second",))
    second.start()
    second.join(1.0)
    assert second.is_alive()  # waiting on the unique event id until the first commits
    release.set()
    first.join(30)
    second.join(30)
    assert results == {"first": "processed", "second": "duplicate"}
    assert BillingEvent.objects.count() == 1
    assert AuditEvent.objects.filter(customer=customer, action="payment_status_changed").count() == 1


def test_older_event_racing_a_newer_one_waits_for_it_and_is_ignored(customer, monkeypatch):
    now = int(time.time())
    newer = event("customer.subscription.updated", subscription(CUS, "active"), created=now)
    older = event("customer.subscription.updated", subscription(CUS, "unpaid"), created=now - 60)
    entered, release = threading.Event(), threading.Event()
    real = billing.HANDLERS["customer.subscription.updated"]

    def slow_for_the_newer(customer, delivery):
        if delivery.event_id == newer["id"]:
            entered.set()
            release.wait(10)
        return real(customer, delivery)

    monkeypatch.setitem(billing.HANDLERS, "customer.subscription.updated", slow_for_the_newer)
    results: dict[str, str] = {}

    def deliver(payload: dict) -> None:
        try:
            results[payload["id"]] = billing.receive(payload).result
        finally:
            connection.close()

    first = threading.Thread(target=deliver, args=(newer,))
    first.start()
    assert entered.wait(10)
    second = threading.Thread(target=deliver, args=(older,))
    second.start()
    second.join(1.0)
    assert second.is_alive()  # waiting for the customer's lock
    release.set()
    first.join(30)
    second.join(30)
    assert results == {newer["id"]: "processed", older["id"]: "ignored"}
    assert (fresh(customer).status, fresh(customer).payment_status) == ("active", "current")


def test_body_the_database_cannot_store_is_never_a_500(customer, client):
    # PostgreSQL's jsonb refuses \u0000; SQLite stores it. Either way, no 500.
    payload = event("invoice.payment_failed", invoice("cus_\u0000", paid=False))
    body = json.dumps(payload).encode()
    assert b"cus_\\u0000" in body
    response = post(client, body)
    assert response.status_code in (200, 400), response.content
    if response.status_code == 400:
        assert BillingEvent.objects.count() == 0
    assert fresh(customer).payment_status == "current"


# --- Failures are kept and retried -------------------------------------------------------------


def explode(customer, delivery):
    raise RuntimeError("the handler broke")


def test_handler_failure_answers_500_keeps_the_error_and_a_retry_applies_it(customer, client, htpasswd_dir, monkeypatch):
    payload = event("customer.subscription.updated", subscription(CUS, "unpaid"))
    with monkeypatch.context() as patch:
        patch.setitem(billing.HANDLERS, "customer.subscription.updated", explode)
        response = post(client, payload)
    assert response.status_code == 500
    stored = BillingEvent.objects.get()
    assert stored.result == "failed"
    assert "RuntimeError: the handler broke" in stored.error
    assert fresh(customer).status == "active"
    assert file_users(htpasswd_dir, "pro") == ["acme"]

    retry = post(client, payload)  # Stripe retries the same event id
    assert retry.status_code == 200
    stored.refresh_from_db()
    assert (stored.result, stored.error) == ("processed", "")
    assert fresh(customer).status == "suspended"
    assert file_users(htpasswd_dir, "pro") == []


def test_failure_partway_leaves_no_partial_change(customer, client, monkeypatch):
    # The payment status is set, then the revoke fails: both must roll back.
    def revoke_fails(*args, **kwargs):
        raise RuntimeError("revoke failed")

    monkeypatch.setattr(services, "revoke", revoke_fails)
    response = post(client, event("customer.subscription.deleted", subscription(CUS, "canceled")))
    assert response.status_code == 500
    c = fresh(customer)
    assert (c.status, c.payment_status, c.last_billing_event_at) == ("active", "current", None)
    assert BillingEvent.objects.get().result == "failed"


# --- Rejected requests -----------------------------------------------------------------------------


def _valid_body() -> bytes:
    return json.dumps(event("customer.subscription.deleted", subscription(CUS, "canceled"))).encode()


REJECTED = {
    "forged signature": lambda: (_valid_body(), {"secret": "whsec_not_the_real_one"}),
    "missing header": lambda: (_valid_body(), {"signature": ""}),
    "garbage header": lambda: (_valid_body(), {"signature": "nonsense"}),
    "stale timestamp": lambda: (_valid_body(), {"timestamp": int(time.time()) - 301}),
    "body changed after signing": lambda: (
        _valid_body(),
        {"signature": sign(_valid_body().replace(b"canceled", b"active"))},
    ),
    "unparseable body": lambda: (b'{"id": "evt_1", "object": "event", ', {}),
    "not UTF-8": lambda: (b"\xff\xfe{}", {}),
    "JSON that is not an event": lambda: (b'{"hello": "world"}', {}),
    "JSON list": lambda: (b"[1, 2, 3]", {}),
    "JSON string": lambda: (b'"evt_1"', {}),
    "event without data.object": lambda: (
        json.dumps({"id": "evt_x", "object": "event", "type": "invoice.paid", "created": 1, "data": {}}).encode(),
        {},
    ),
    "event without created": lambda: (
        json.dumps({"id": "evt_x", "object": "event", "type": "invoice.paid", "data": {"object": {}}}).encode(),
        {},
    ),
}


@pytest.mark.parametrize("case", REJECTED, ids=list(REJECTED))
def test_bad_requests_get_400_and_change_nothing(customer, client, htpasswd_dir, case):
    body, kwargs = REJECTED[case]()
    before, files, audits = state(customer), snapshot(htpasswd_dir), AuditEvent.objects.count()
    response = post(client, body, **kwargs)
    assert response.status_code == 400, response.content
    assert BillingEvent.objects.count() == 0
    assert (state(customer), snapshot(htpasswd_dir), AuditEvent.objects.count()) == (before, files, audits)


def test_timestamp_just_inside_the_tolerance_is_accepted(customer, client):
    response = post(client, event("invoice.payment_failed", invoice(CUS, paid=False)), timestamp=int(time.time()) - 240)
    assert response.status_code == 200


def test_unset_secret_answers_503_and_stores_nothing(customer, client, settings, htpasswd_dir):
    settings.STRIPE_WEBHOOK_SECRET = None
    files = snapshot(htpasswd_dir)
    response = post(client, event("customer.subscription.deleted", subscription(CUS, "canceled")))
    assert response.status_code == 503
    assert BillingEvent.objects.count() == 0
    assert fresh(customer).status == "active"
    assert snapshot(htpasswd_dir) == files


def test_only_post_is_allowed(customer, client):
    assert client.get(reverse("stripe-webhook")).status_code == 405


# --- Through a live server -------------------------------------------------------------------------


def test_live_server_applies_signed_events_and_rejects_forged_ones(customer, live_server, htpasswd_dir):
    now = int(time.time())
    status, answer = post_http(
        live_server.url, event("customer.subscription.updated", subscription(CUS, "unpaid"), created=now - 10)
    )
    assert (status, answer["result"]) == (200, "processed")
    assert file_users(htpasswd_dir, "pro") == []

    status, _ = post_http(live_server.url, event("invoice.paid", invoice(CUS, paid=True)), secret="whsec_forged")
    assert status == 400
    assert fresh(customer).status == "suspended"

    status, answer = post_http(live_server.url, event("invoice.paid", invoice(CUS, paid=True), created=now))
    assert (status, answer["result"]) == (200, "processed")
    assert apache_verifies(htpasswd_dir / "pro.htpasswd", "acme", "pw-acme")
    assert BillingEvent.objects.count() == 2


# --- The admin -------------------------------------------------------------------------------------


def test_admin_reprocesses_a_failed_event(customer, client, admin_client, htpasswd_dir, monkeypatch):
    with monkeypatch.context() as patch:
        patch.setitem(billing.HANDLERS, "customer.subscription.deleted", explode)
        post(client, event("customer.subscription.deleted", subscription(CUS, "canceled")))
    stored = BillingEvent.objects.get()
    assert stored.result == "failed"

    changelist = reverse("admin:customers_billingevent_changelist")
    response = admin_client.post(changelist, {"action": "reprocess_failed", "_selected_action": [stored.pk]})
    assert response.status_code == 302
    stored.refresh_from_db()
    assert stored.result == "processed"
    assert fresh(customer).status == "revoked"
    assert file_users(htpasswd_dir, "pro") == []
    audit = AuditEvent.objects.get(customer=customer, action="revoked")
    assert (audit.actor_kind, audit.actor_label, audit.actor_user.username) == ("webhook", stored.stripe_event_id, "admin")


def test_reprocess_needs_the_change_billing_event_permission(customer, client, django_user_model, monkeypatch):
    with monkeypatch.context() as patch:
        patch.setitem(billing.HANDLERS, "customer.subscription.deleted", explode)
        post(client, event("customer.subscription.deleted", subscription(CUS, "canceled")))
    stored = BillingEvent.objects.get()
    viewer = django_user_model.objects.create_user("viewer", password="x", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_billingevent"))
    client.force_login(viewer)
    changelist = reverse("admin:customers_billingevent_changelist")
    assert "reprocess_failed" not in client.get(changelist).content.decode()
    client.post(changelist, {"action": "reprocess_failed", "_selected_action": [stored.pk]})
    stored.refresh_from_db()
    assert stored.result == "failed"
    assert fresh(customer).status == "active"


def test_customer_page_shows_payment_history_and_what_billing_did(customer, client, admin_client):
    now = int(time.time())
    failed = event("invoice.payment_failed", invoice(CUS, paid=False), created=now - 10)
    unpaid = event("customer.subscription.updated", subscription(CUS, "unpaid"), created=now)
    post(client, failed)
    post(client, unpaid)
    page = admin_client.get(reverse("admin:customers_customer_change", args=[customer.pk]))
    assert page.status_code == 200
    html = page.content.decode()
    assert failed["id"] in html and unpaid["id"] in html
    assert "invoice.payment_failed" in html
    assert "access active → suspended" in html

    assert "suspend" in html and "nonpayment" in html  # the audit record of the suspension

    # Read-only tables, not inlines: a change-form POST needs no extra formset data.
    response = admin_client.post(
        reverse("admin:customers_customer_change", args=[customer.pk]),
        {
            "name": "Acme Corp",
            "email": "ops@acme.io",
            "tier": customer.tier_id,
            "payment_status": "past_due",
            "stripe_customer_id": CUS,
            "notes": "",
            "credentials-TOTAL_FORMS": "1",
            "credentials-INITIAL_FORMS": "1",
            "credentials-0-id": customer.credentials.get().pk,
            "credentials-0-customer": customer.pk,
        },
    )
    assert response.status_code == 302, response.content
    assert fresh(customer).name == "Acme Corp"

    listing = admin_client.get(reverse("admin:customers_billingevent_changelist") + "?result__exact=processed")
    assert listing.status_code == 200
    assert unpaid["id"] in listing.content.decode()
    detail = admin_client.get(reverse("admin:customers_billingevent_change", args=[BillingEvent.objects.first().pk]))
    assert detail.status_code == 200


def test_grace_period_then_payment_round_trip(customer, client, htpasswd_dir):
    """Past due, suspended by suspend_lapsed after the grace period, back on payment."""
    services.record_payment_failed(customer, actor=COMMAND, since=timezone.now() - timedelta(days=8))
    assert [c.pk for c in services.suspend_lapsed(actor=COMMAND)] == [customer.pk]
    assert file_users(htpasswd_dir, "pro") == []
    post(client, event("invoice.paid", invoice(CUS, paid=True)))
    assert fresh(customer).status == "active"
    assert apache_verifies(htpasswd_dir / "pro.htpasswd", "acme", "pw-acme")


def test_system_check_warns_about_an_api_key_in_place_of_the_signing_secret(settings):
    from customers.checks import check_stripe_settings

    settings.STRIPE_WEBHOOK_SECRET = "sk_live_not_a_signing_secret"
    assert [w.id for w in check_stripe_settings()] == ["customers.W401"]
    settings.STRIPE_WEBHOOK_SECRET = "whsec_abc"
    assert check_stripe_settings() == []
