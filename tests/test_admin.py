"""Staff changes through the admin (Django test client) reach the tier files."""
from __future__ import annotations

import re

import pytest
from django.urls import reverse

from customers import services
from customers.models import AuditEvent, Credential, Customer

from .conftest import COMMAND, apache_verifies, file_users

pytestmark = pytest.mark.django_db(transaction=True)
CHANGELIST = reverse("admin:customers_customer_changelist")


@pytest.fixture
def staff_client(client, django_user_model):
    user = django_user_model.objects.create_superuser("alice", "alice@vendor.io", "pw")
    client.force_login(user)
    return client


@pytest.fixture
def customer(tiers):
    customer = services.create_customer(name="Acme", email="ops@acme.io", tier=tiers["pro"], actor=COMMAND)
    services.issue_credential(customer, actor=COMMAND, username="acme", password="pw-acme")
    return customer


def run_action(client, action, *customers, **extra):
    data = {"action": action, "_selected_action": [c.pk for c in customers], **extra}
    return client.post(CHANGELIST, data)


def test_add_customer_then_issue_credential_shows_secret_once(staff_client, tiers, htpasswd_dir):
    response = staff_client.post(
        reverse("admin:customers_customer_add"),
        {
            "name": "Globex",
            "email": "it@globex.io",
            "tier": tiers["enterprise"].pk,
            "status": "active",
            "payment_status": "current",
            "notes": "",
            "credentials-TOTAL_FORMS": "0",
            "credentials-INITIAL_FORMS": "0",
        },
    )
    assert response.status_code == 302, response.content
    customer = Customer.objects.get(email="it@globex.io")

    url = reverse("admin:customers_customer_issue_credential", args=[customer.pk])
    form = staff_client.get(url)
    token = re.search(rb'name="token" value="([^"]+)"', form.content).group(1).decode()
    response = staff_client.post(url, {"token": token, "username": "globex-ci", "label": "CI"})
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    secret = re.search(rb'id="credential-secret">([^<]+)<', response.content).group(1).decode()
    assert "docker login registry.example.com --username globex-ci".encode() in response.content
    assert apache_verifies(htpasswd_dir / "enterprise.htpasswd", "globex-ci", secret)
    assert Credential.objects.get().password_hash != secret

    # Posting the same form again (a reload) issues nothing and shows nothing.
    again = staff_client.post(url, {"token": token, "username": "globex-ci2"})
    assert again.status_code == 302
    assert Credential.objects.count() == 1
    assert AuditEvent.objects.filter(action="credential_issued", actor_label="alice").count() == 1


def test_issue_credential_with_unsafe_username_is_refused(staff_client, customer, htpasswd_dir):
    before = (htpasswd_dir / "pro.htpasswd").read_bytes()
    url = reverse("admin:customers_customer_issue_credential", args=[customer.pk])
    token = re.search(rb'name="token" value="([^"]+)"', staff_client.get(url).content).group(1).decode()
    response = staff_client.post(url, {"token": token, "username": "evil:user"})
    assert response.status_code == 200
    assert b"Invalid username" in response.content
    assert (htpasswd_dir / "pro.htpasswd").read_bytes() == before
    assert Credential.objects.count() == 1


def test_suspend_and_reactivate_actions(staff_client, customer, htpasswd_dir):
    response = run_action(staff_client, "suspend_selected", customer)
    assert response.status_code == 200  # the confirmation page; nothing changed yet
    assert Customer.objects.get().status == "active"
    response = run_action(staff_client, "suspend_selected", customer, confirmed="yes")
    assert response.status_code == 302
    assert Customer.objects.get().status == "suspended"
    assert file_users(htpasswd_dir, "pro") == []
    run_action(staff_client, "reactivate_selected", customer)
    assert Customer.objects.get().status == "active"
    assert apache_verifies(htpasswd_dir / "pro.htpasswd", "acme", "pw-acme")
    event = AuditEvent.objects.filter(action="suspended").get()
    assert (event.actor_kind, event.actor_label) == ("staff", "alice")


def test_revoke_asks_for_confirmation_first(staff_client, customer, htpasswd_dir):
    response = run_action(staff_client, "revoke_selected", customer)
    assert response.status_code == 200
    assert b"Revoke 1 customer(s)?" in response.content and b"ops@acme.io" in response.content
    assert Customer.objects.get().status == "active"
    assert file_users(htpasswd_dir, "pro") == ["acme"]

    response = run_action(staff_client, "revoke_selected", customer, confirmed="yes")
    assert response.status_code == 302
    assert Customer.objects.get().status == "revoked"
    assert file_users(htpasswd_dir, "pro") == []


def test_move_between_tiers_through_the_change_form(staff_client, customer, tiers, htpasswd_dir):
    response = staff_client.post(
        reverse("admin:customers_customer_change", args=[customer.pk]),
        {
            "name": "Acme",
            "email": "ops@acme.io",
            "tier": tiers["enterprise"].pk,
            "payment_status": "current",
            "notes": "",
            "credentials-TOTAL_FORMS": "1",
            "credentials-INITIAL_FORMS": "1",
            "credentials-0-id": Credential.objects.get().pk,
            "credentials-0-customer": customer.pk,
        },
    )
    assert response.status_code == 302, response.content
    assert file_users(htpasswd_dir, "pro") == []
    assert apache_verifies(htpasswd_dir / "enterprise.htpasswd", "acme", "pw-acme")
    assert AuditEvent.objects.get(action="tier_changed").actor_label == "alice"


def test_delete_through_the_admin(staff_client, customer, htpasswd_dir):
    response = staff_client.post(reverse("admin:customers_customer_delete", args=[customer.pk]), {"post": "yes"})
    assert response.status_code == 302
    assert not Customer.objects.exists()
    assert file_users(htpasswd_dir, "pro") == []


def test_audit_log_is_read_only(staff_client, customer):
    assert staff_client.get(reverse("admin:customers_auditevent_changelist")).status_code == 200
    assert staff_client.get(reverse("admin:customers_auditevent_add")).status_code == 403
    event = AuditEvent.objects.first()
    response = staff_client.post(reverse("admin:customers_auditevent_delete", args=[event.pk]), {"post": "yes"})
    assert response.status_code == 403
    assert AuditEvent.objects.filter(pk=event.pk).exists()


def test_admin_requires_staff(client, customer):
    response = client.get(CHANGELIST)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_marking_past_due_in_the_change_form_starts_the_grace_period(staff_client, customer, tiers):
    response = staff_client.post(
        reverse("admin:customers_customer_change", args=[customer.pk]),
        {"name": "Acme", "email": "ops@acme.io", "tier": tiers["pro"].pk, "payment_status": "past_due", "notes": ""},
    )
    assert response.status_code == 302, response.content
    assert Customer.objects.get().past_due_since is not None
    staff_client.post(
        reverse("admin:customers_customer_change", args=[customer.pk]),
        {"name": "Acme", "email": "ops@acme.io", "tier": tiers["pro"].pk, "payment_status": "current", "notes": ""},
    )
    assert Customer.objects.get().past_due_since is None
