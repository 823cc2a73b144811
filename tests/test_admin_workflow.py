"""The staff workflow through the admin, with Django's test client: the
dashboard, the lapsed filter, bulk actions with confirmation, rotation (with
and without overlap), single-credential revocation, the "why can't they
pull?" panel, permissions enforced on the actions, and login rate limiting."""

from __future__ import annotations

import re
import time
from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from customers import htpasswd, services, sync
from customers.models import AuditEvent, Credential, Customer, TierFileStatus

from .conftest import COMMAND, apache_verifies, file_users
from .staff import (  # noqa: F401  (fixtures)
    PASSWORD,
    add_customer,
    billing_admin,
    billing_cycle,
    make_staff,
    staff_groups,
    support_user,
)

pytestmark = pytest.mark.django_db(transaction=True)

CHANGELIST = "/admin/customers/customer/"


def post_action(client, action: str, customers, confirmed: bool = True, **extra):
    data = {"action": action, "_selected_action": [c.pk for c in customers], **extra}
    if confirmed:
        data["confirmed"] = "yes"
    else:
        data["index"] = "0"  # as posted by the changelist's own action bar
    return client.post(CHANGELIST, data)


def statuses(*customers) -> list[str]:
    return [Customer.objects.get(pk=c.pk).status for c in customers]


def secret_from(response) -> tuple[str, str]:
    html = response.content.decode()
    username = re.search(r'id="credential-username">([^<]+)<', html).group(1)
    secret = re.search(r'id="credential-secret">([^<]+)<', html).group(1)
    return username, secret


def form_token(response) -> str:
    return re.search(r'name="token" value="([^"]+)"', response.content.decode()).group(1)


# --- Groups and permissions ----------------------------------------------------------------


@pytest.mark.django_db(transaction=False)
def test_migration_creates_the_support_and_billing_admin_groups():
    support = set(Group.objects.get(name="support").permissions.values_list("codename", flat=True))
    billing = set(Group.objects.get(name="billing admin").permissions.values_list("codename", flat=True))
    assert {"view_customer", "view_credential", "suspend_customer"} <= support
    assert not support & {
        "revoke_customer",
        "reactivate_customer",
        "rotate_credential",
        "revoke_credential",
        "change_customer",
    }
    assert support | {"revoke_customer", "reactivate_customer", "rotate_credential", "revoke_credential"} <= billing


def test_support_user_cannot_revoke_even_by_posting_the_action(client, support_user, billing_cycle, htpasswd_dir):
    client.force_login(support_user)
    page = client.get(CHANGELIST)
    assert page.status_code == 200
    assert b'value="suspend_selected"' in page.content
    assert b'value="revoke_selected"' not in page.content
    before = (htpasswd_dir / "pro.htpasswd").read_bytes()
    lapsed = [billing_cycle["lapsed1"], billing_cycle["lapsed2"]]

    for confirmed in (False, True):
        response = post_action(client, "revoke_selected", lapsed, confirmed=confirmed)
        assert response.status_code == 302  # Django refuses an action it does not offer
    assert statuses(*lapsed) == ["active", "active"]
    assert (htpasswd_dir / "pro.htpasswd").read_bytes() == before
    assert not AuditEvent.objects.filter(action="revoked").exists()


def test_support_user_cannot_reactivate_rotate_issue_or_revoke_a_credential(client, support_user, billing_cycle):
    customer = services.suspend(billing_cycle["paying"], actor=COMMAND)
    credential = customer.credentials.get()
    old_hash = credential.password_hash
    client.force_login(support_user)

    assert post_action(client, "reactivate_selected", [customer]).status_code == 302
    assert statuses(customer) == ["suspended"]
    for url in (
        reverse("admin:customers_credential_rotate", args=[credential.pk]),
        reverse("admin:customers_credential_revoke", args=[credential.pk]),
        reverse("admin:customers_customer_issue_credential", args=[customer.pk]),
    ):
        assert client.get(url).status_code == 403
        assert client.post(url, {"token": "x", "overlap": ""}).status_code == 403
    client.post(
        "/admin/customers/credential/",
        {"action": "revoke_selected_credentials", "_selected_action": [credential.pk], "index": "0"},
    )
    credential.refresh_from_db()
    assert credential.password_hash == old_hash and credential.revoked_at is None
    assert customer.credentials.count() == 1
    # The page does not offer what the user cannot do.
    page = client.get(reverse("admin:customers_customer_change", args=[customer.pk]))
    assert page.status_code == 200
    assert b"rotate-link" not in page.content and b"revoke-link" not in page.content


def test_support_user_can_suspend_after_confirming(client, support_user, billing_cycle, htpasswd_dir):
    client.force_login(support_user)
    lapsed = [billing_cycle["lapsed1"], billing_cycle["lapsed2"]]
    page = post_action(client, "suspend_selected", lapsed, confirmed=False)
    assert page.status_code == 200 and b"losing-access" in page.content
    assert statuses(*lapsed) == ["active", "active"]
    assert post_action(client, "suspend_selected", lapsed).status_code == 302
    assert statuses(*lapsed) == ["suspended", "suspended"]
    assert Customer.objects.get(pk=lapsed[0].pk).suspension_reason == "staff"
    assert file_users(htpasswd_dir, "pro") == ["dev", "team"]
    event = AuditEvent.objects.filter(action="suspended").first()
    assert (event.actor_kind, event.actor_label) == ("staff", "sam-support")


# --- Lapsed customers, bulk revoke ------------------------------------------------------------


def test_lapsed_filter_lists_only_customers_past_the_grace_period(client, billing_admin, billing_cycle):
    client.force_login(billing_admin)
    html = client.get(CHANGELIST, {"grace": "lapsed"}).content.decode()
    for key in ("lapsed1", "lapsed2", "lapsed_ent"):
        assert billing_cycle[key].email in html
    for key in ("grace", "paying"):
        assert billing_cycle[key].email not in html
    in_grace = client.get(CHANGELIST, {"grace": "in_grace"}).content.decode()
    assert billing_cycle["grace"].email in in_grace and billing_cycle["lapsed1"].email not in in_grace


def test_bulk_revoke_shows_who_loses_access_before_changing_anything(
    client, billing_admin, billing_cycle, htpasswd_dir
):
    client.force_login(billing_admin)
    already = services.suspend(billing_cycle["lapsed_ent"], actor=COMMAND)
    before = {p.name: p.read_bytes() for p in htpasswd_dir.glob("*.htpasswd")}
    chosen = [billing_cycle["lapsed1"], billing_cycle["lapsed2"], already]
    page = post_action(client, "revoke_selected", chosen, confirmed=False)
    assert page.status_code == 200
    html = page.content.decode()
    losing = html.split('id="losing-access"')[1].split("</ul>")[0]
    assert "ops@lapsed-one.io" in losing and "ci@lapsed-two.io" in losing and "it@lapsed-ent.io" not in losing
    assert "it@lapsed-ent.io" in html.split('id="without-access"')[1]
    assert statuses(*chosen) == ["active", "active", "suspended"]
    assert {p.name: p.read_bytes() for p in htpasswd_dir.glob("*.htpasswd")} == before


def test_confirmed_bulk_revoke_writes_each_tier_file_once(
    client, billing_admin, billing_cycle, htpasswd_dir, monkeypatch
):
    client.force_login(billing_admin)
    writes = []
    real = htpasswd.write_atomic
    monkeypatch.setattr(
        htpasswd, "write_atomic", lambda path, *a, **kw: writes.append(path.stem) or real(path, *a, **kw)
    )
    chosen = [billing_cycle["lapsed1"], billing_cycle["lapsed2"], billing_cycle["lapsed_ent"]]
    response = post_action(client, "revoke_selected", chosen)
    assert response.status_code == 302
    assert statuses(*chosen) == ["revoked"] * 3
    assert sorted(writes) == ["enterprise", "pro"]
    assert file_users(htpasswd_dir, "pro") == ["dev", "team"]
    assert file_users(htpasswd_dir, "enterprise") == []
    assert AuditEvent.objects.filter(action="revoked", actor_label="bea-billing").count() == 3
    assert "Revoked 3 customer(s)." in [str(m) for m in response.wsgi_request._messages]


def test_billing_admin_can_reactivate(client, billing_admin, billing_cycle, htpasswd_dir):
    client.force_login(billing_admin)
    customer = services.revoke(billing_cycle["lapsed1"], actor=COMMAND)
    assert post_action(client, "reactivate_selected", [customer], confirmed=False).status_code == 302
    assert statuses(customer) == ["active"]
    assert "ops" in file_users(htpasswd_dir, "pro")


# --- Dashboard ------------------------------------------------------------------------------------


def test_dashboard_shows_counts_past_due_recent_changes_and_file_state(client, billing_admin, billing_cycle):
    services.revoke(billing_cycle["lapsed2"], actor=COMMAND)
    client.force_login(billing_admin)
    html = client.get("/admin/").content.decode()
    pro_row = re.search(r'<tr data-tier="pro">(.*?)</tr>', html, re.S).group(1)
    assert re.search(r'count-active"><a [^>]*>3<', pro_row) and re.search(r'count-revoked"><a [^>]*>1<', pro_row)
    past_due = html.split('id="dashboard-past-due"')[1].split("</table>")[0]
    assert "Ops" in past_due and "Dev" in past_due and "It" in past_due
    assert "Ci" not in past_due  # revoked: nothing left to decide
    assert "lapsed 13 day(s) ago" in past_due and "5 day(s) left" in past_due
    recent = html.split('id="dashboard-recent"')[1].split("</table>")[0]
    assert "revoked" in recent
    files = html.split('id="dashboard-files"')[1].split("</table>")[0]
    assert files.count("in sync") == 2
    assert 'id="tier-file-banner"' not in html


def test_dashboard_banner_for_drift_and_failed_writes(client, billing_admin, billing_cycle, htpasswd_dir):
    client.force_login(billing_admin)
    # Someone edits the file by hand: the dashboard compares it with the database.
    path = htpasswd_dir / "pro.htpasswd"
    path.write_text("".join(line + "\n" for line in path.read_text().splitlines() if not line.startswith("ops:")))
    TierFileStatus.objects.update_or_create(
        tier_slug="enterprise",
        defaults={"last_error": "OSError: [Errno 28] No space left on device", "last_error_at": timezone.now()},
    )
    html = client.get("/admin/").content.decode()
    banner = html.split('id="tier-file-banner"')[1].split("</ul>")[0]
    assert "The pro tier file is not what the database says" in banner and "missing ops" in banner
    failure_banner = html.split('id="tier-file-alert"')[1].split("</ul>")[0]
    assert "The enterprise tier file could not be written" in failure_banner
    assert "No space left on device" in failure_banner
    files = html.split('id="dashboard-files"')[1].split("</table>")[0]
    assert "write failed" in files and "differs from the database" in files
    call_command("sync_htpasswd", stdout=StringIO())
    html = client.get("/admin/").content.decode()
    assert 'id="tier-file-banner"' not in html and 'id="tier-file-alert"' not in html


def test_staff_without_customer_view_permission_get_no_dashboard(client, db):
    client.force_login(make_staff("nobody"))
    response = client.get("/admin/")
    assert response.status_code == 200 and b'id="registry-dashboard"' not in response.content


# --- Credentials ------------------------------------------------------------------------------------


def test_rotation_shows_the_secret_once_and_a_resubmission_shows_nothing(
    client, billing_admin, billing_cycle, htpasswd_dir
):
    client.force_login(billing_admin)
    credential = billing_cycle["paying"].credentials.get()
    url = reverse("admin:customers_credential_rotate", args=[credential.pk])
    token = form_token(client.get(url))
    response = client.post(url, {"token": token, "overlap": ""})
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    username, secret = secret_from(response)
    assert username == "team"
    assert (
        f"echo '{secret}' | docker login registry.example.com --username team --password-stdin"
        in response.content.decode()
    )
    assert apache_verifies(htpasswd_dir / "pro.htpasswd", "team", secret)
    assert not apache_verifies(htpasswd_dir / "pro.htpasswd", "team", "pw-team@paying.io")
    rotated_hash = Credential.objects.get(pk=credential.pk).password_hash

    again = client.post(url, {"token": token, "overlap": ""})  # a reload re-posts the form
    assert again.status_code == 302
    assert secret.encode() not in client.get(again["Location"]).content
    assert Credential.objects.get(pk=credential.pk).password_hash == rotated_hash
    assert secret not in rotated_hash and not AuditEvent.objects.filter(changes__icontains=secret).exists()


def test_overlapping_rotation_old_secret_works_until_the_chosen_time_then_sync_drops_it(
    client, billing_admin, billing_cycle, htpasswd_dir
):
    """Real time: a 4-second overlap chosen in the admin. Nobody touches the
    admin afterwards; /healthz reports the expired line as drift until
    sync_htpasswd (the every-minute timer) removes it."""
    client.force_login(billing_admin)
    credential = billing_cycle["paying"].credentials.get()
    path = htpasswd_dir / "pro.htpasswd"
    url = reverse("admin:customers_credential_rotate", args=[credential.pk])
    until = timezone.now().replace(microsecond=0) + timedelta(seconds=4)
    response = client.post(
        url,
        {
            "token": form_token(client.get(url)),
            "overlap": "until",
            "old_works_until": until.strftime("%Y-%m-%d %H:%M:%S"),
        },
    )
    assert response.status_code == 200, response.content.decode()[:2000]
    new_username, secret = secret_from(response)
    assert new_username == "team-r2"
    assert b'id="overlap-note"' in response.content

    # During the overlap both secrets work, each with its own username.
    assert file_users(htpasswd_dir, "pro") == ["ci", "dev", "ops", "team", "team-r2"]
    assert apache_verifies(path, "team", "pw-team@paying.io")
    assert apache_verifies(path, "team-r2", secret)
    assert client.get("/healthz").status_code == 200

    deadline = time.monotonic() + 30
    while timezone.now() <= until:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    # Expired, but nothing rewrote the file yet: that is drift.
    health = client.get("/healthz")
    assert health.status_code == 503
    assert "1 unexpected" in health.json()["reason"]
    assert apache_verifies(path, "team", "pw-team@paying.io")  # until the timer runs

    call_command("sync_htpasswd", stdout=StringIO())
    assert file_users(htpasswd_dir, "pro") == ["ci", "dev", "ops", "team-r2"]
    assert not apache_verifies(path, "team", "pw-team@paying.io")
    assert apache_verifies(path, "team-r2", secret)
    assert client.get("/healthz").status_code == 200


def test_overlap_longer_than_seven_days_or_in_the_past_is_refused(client, billing_admin, billing_cycle):
    client.force_login(billing_admin)
    credential = billing_cycle["paying"].credentials.get()
    url = reverse("admin:customers_credential_rotate", args=[credential.pk])
    for until in (timezone.now() + timedelta(days=7, hours=1), timezone.now() - timedelta(minutes=1)):
        response = client.post(
            url,
            {
                "token": form_token(client.get(url)),
                "overlap": "until",
                "old_works_until": until.strftime("%Y-%m-%d %H:%M:%S"),
            },
        )
        assert response.status_code == 200 and b"at most 7 days" in response.content
        assert b"credential-secret" not in response.content
    with pytest.raises(services.ValidationError):
        services.rotate_credential_with_overlap(
            credential, actor=COMMAND, old_works_until=timezone.now() + timedelta(days=8)
        )
    assert Credential.objects.count() == 5 and Credential.objects.get(pk=credential.pk).expires_at is None


def test_overlap_choice_sets_the_old_credentials_expiry(client, billing_admin, billing_cycle):
    client.force_login(billing_admin)
    credential = billing_cycle["paying"].credentials.get()
    url = reverse("admin:customers_credential_rotate", args=[credential.pk])
    started = timezone.now()
    response = client.post(url, {"token": form_token(client.get(url)), "overlap": "3d"})
    assert response.status_code == 200
    old = Credential.objects.get(pk=credential.pk)
    assert timedelta(days=3) <= old.expires_at - started < timedelta(days=3, minutes=1)
    event = AuditEvent.objects.get(action="credential_issued", changes__username=[None, "team-r2"])
    assert "rotation with overlap: team works until" in event.reason


def test_revoking_one_credential_leaves_the_customer_and_its_other_credentials(
    client, billing_admin, billing_cycle, htpasswd_dir
):
    client.force_login(billing_admin)
    customer = billing_cycle["paying"]
    services.issue_credential(customer, actor=COMMAND, username="team-ci", password="ci-secret")
    credential = Credential.objects.get(username="team")
    url = reverse("admin:customers_credential_revoke", args=[credential.pk])
    assert b"Yes, revoke team" in client.get(url).content
    assert "team" in file_users(htpasswd_dir, "pro")
    response = client.post(url)
    assert response.status_code == 302
    assert file_users(htpasswd_dir, "pro") == ["ci", "dev", "ops", "team-ci"]
    assert statuses(customer) == ["active"]
    assert Credential.objects.get(pk=credential.pk).revoked_at is not None


def test_expiry_date_set_in_the_change_form_drops_the_credential(client, billing_admin, billing_cycle, htpasswd_dir):
    client.force_login(billing_admin)
    credential = billing_cycle["paying"].credentials.get()
    past = timezone.now() - timedelta(minutes=1)
    response = client.post(
        reverse("admin:customers_credential_change", args=[credential.pk]),
        {"label": "laptop", "expires_at_0": past.strftime("%Y-%m-%d"), "expires_at_1": past.strftime("%H:%M:%S")},
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    assert "team" not in file_users(htpasswd_dir, "pro")
    assert AuditEvent.objects.filter(action="credential_expiry_changed", actor_label="bea-billing").exists()


def test_issuing_a_credential_needs_the_rotate_permission_and_shows_the_secret_once(
    client, billing_admin, billing_cycle, htpasswd_dir
):
    client.force_login(billing_admin)
    customer = billing_cycle["paying"]
    url = reverse("admin:customers_customer_issue_credential", args=[customer.pk])
    token = form_token(client.get(url))
    response = client.post(url, {"token": token, "username": "team-laptop", "label": "laptop"})
    username, secret = secret_from(response)
    assert username == "team-laptop"
    assert apache_verifies(htpasswd_dir / "pro.htpasswd", "team-laptop", secret)
    assert client.post(url, {"token": token, "username": "team-laptop2"}).status_code == 302
    assert not Credential.objects.filter(username="team-laptop2").exists()


# --- "Why can't they pull?" --------------------------------------------------------------------------


def access_panel(client, customer) -> str:
    html = client.get(reverse("admin:customers_customer_change", args=[customer.pk])).content.decode()
    return html.split('id="access-report"')[1].split("</fieldset>")[0]


def test_customer_page_checks_credentials_against_the_file_on_disk(client, support_user, billing_cycle, htpasswd_dir):
    client.force_login(support_user)
    customer = billing_cycle["paying"]
    services.issue_credential(customer, actor=COMMAND, username="team-ci", password="x")
    panel = access_panel(client, customer)
    assert "in the pro tier file now" in panel
    assert panel.count('alt="yes"> yes') == 2

    # The file loses a line behind the database's back (a restore, a hand edit).
    path = htpasswd_dir / "pro.htpasswd"
    path.write_text("".join(line + "\n" for line in path.read_text().splitlines() if not line.startswith("team-ci:")))
    panel = access_panel(client, customer)
    row = re.search(r'<tr data-username="team-ci">(.*?)</tr>', panel, re.S).group(1)
    assert 'alt="no"> no' in row and "should be in the file but is not" in row
    assert "run sync_htpasswd" in panel


def test_customer_page_explains_suspension_payment_and_history(client, support_user, billing_cycle):
    client.force_login(support_user)
    customer = billing_cycle["lapsed1"]
    services.suspend(customer, actor=COMMAND, reason=Customer.SuspensionReason.NONPAYMENT)
    panel = access_panel(client, customer)
    assert "no working credential in the tier file" in panel
    assert "suspended for non-payment" in panel
    assert "Payment is past due (lapsed 13 day(s) ago)" in panel
    row = re.search(r'<tr data-username="ops">(.*?)</tr>', panel, re.S).group(1)
    assert 'alt="no"> no' in row
    html = client.get(reverse("admin:customers_customer_change", args=[customer.pk])).content.decode()
    history = html.split('id="audit-history"')[1]
    assert "suspended" in history and "credential_issued" in history and "Management command: tests" in history


def test_sync_time_report_for_an_expired_credential(billing_cycle, htpasswd_dir):
    credential = billing_cycle["paying"].credentials.get()
    Credential.objects.filter(pk=credential.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    from customers import dashboard

    report = dashboard.access_report(Customer.objects.get(pk=billing_cycle["paying"].pk))
    check = report.credentials[0]
    assert check.in_file and not check.should_be_in_file
    assert "still in the file although it should not be" in "; ".join(check.reasons)
    assert [d.slug for d in sync.find_drift()] == ["pro"]


# --- Login hardening ------------------------------------------------------------------------------------


def test_failed_staff_logins_are_rate_limited(client, settings, support_user):
    login = "/admin/login/?next=/admin/"
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        response = client.post(login, {"username": "sam-support", "password": "wrong"})
        assert response.status_code == 200  # the form again, with an error
    locked = client.post(login, {"username": "sam-support", "password": "wrong"})
    assert locked.status_code == 429
    # Even the right password is refused during the cool-off.
    response = client.post(login, {"username": "sam-support", "password": PASSWORD})
    assert response.status_code == 429 and b"Too many failed logins" in response.content
    assert b"registry-admin" in response.content
    assert "_auth_user_id" not in client.session
    # Another staff member is not locked out by it.
    make_staff("other")
    assert client.post(login, {"username": "other", "password": PASSWORD}).status_code == 302


def test_a_good_login_resets_the_failure_count(client, settings, support_user):
    login = "/admin/login/?next=/admin/"
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        client.post(login, {"username": "sam-support", "password": "wrong"})
    assert client.post(login, {"username": "sam-support", "password": PASSWORD}).status_code == 302
    client.logout()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert client.post(login, {"username": "sam-support", "password": "wrong"}).status_code == 200


def test_suspend_for_nonpayment_records_the_reason_billing_lifts(client, support_user, billing_cycle, htpasswd_dir):
    client.force_login(support_user)
    customer = billing_cycle["lapsed1"]
    assert post_action(client, "suspend_nonpayment_selected", [customer]).status_code == 302
    customer = Customer.objects.get(pk=customer.pk)
    assert (customer.status, customer.suspension_reason) == ("suspended", "nonpayment")
    assert "ops" not in file_users(htpasswd_dir, "pro")


def test_billing_admin_revokes_several_credentials_with_one_write_per_tier(
    client, billing_admin, billing_cycle, htpasswd_dir, monkeypatch
):
    client.force_login(billing_admin)
    writes = []
    real = htpasswd.write_atomic
    monkeypatch.setattr(
        htpasswd, "write_atomic", lambda path, *a, **kw: writes.append(path.stem) or real(path, *a, **kw)
    )
    chosen = Credential.objects.filter(username__in=["ops", "ci", "it"])
    response = client.post(
        "/admin/customers/credential/",
        {"action": "revoke_selected_credentials", "_selected_action": [c.pk for c in chosen], "index": "0"},
    )
    assert response.status_code == 302
    assert sorted(writes) == ["enterprise", "pro"]
    assert file_users(htpasswd_dir, "pro") == ["dev", "team"] and file_users(htpasswd_dir, "enterprise") == []
    assert statuses(billing_cycle["lapsed1"], billing_cycle["lapsed_ent"]) == ["active", "active"]


def test_customer_page_says_when_every_credential_is_revoked_or_expired(client, support_user, billing_cycle):
    client.force_login(support_user)
    customer = billing_cycle["paying"]
    services.revoke_credential(customer.credentials.get(), actor=COMMAND)
    panel = access_panel(client, customer)
    assert "Every credential is revoked or expired" in panel
    assert "no working credential in the tier file" in panel
