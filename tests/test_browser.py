"""The staff workflow in real headless Chromium (Debian's ``chromium``,
driven by Playwright), against Django's live server.

Set REGISTRY_ADMIN_SCREENSHOTS=docs/img (``make screenshots``) to refresh
the screenshots used by docs/staff-guide.md; otherwise they go to tmp_path.
"""

from __future__ import annotations

import os

# Playwright's sync API runs an event loop in this thread; Django would
# otherwise refuse the ORM calls the test makes between browser steps.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from django.urls import reverse  # noqa: E402
from playwright.sync_api import expect  # noqa: E402

from customers.models import AuditEvent, Credential, Customer  # noqa: E402

from .conftest import apache_verifies, file_users, require_program  # noqa: E402
from .staff import PASSWORD, add_customer, billing_admin, staff_groups, support_user  # noqa: E402,F401

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.system]

TIMEOUT_MS = 20_000


@pytest.fixture(scope="module")
def chromium():
    from playwright.sync_api import sync_playwright

    executable = require_program("chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(chromium, live_server):
    context = chromium.new_context(base_url=live_server.url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()


@pytest.fixture
def screenshots(tmp_path) -> Path:
    directory = Path(os.environ.get("REGISTRY_ADMIN_SCREENSHOTS") or tmp_path / "screenshots")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def shoot(page, directory: Path, name: str) -> None:
    path = directory / name
    page.screenshot(path=str(path), full_page=True)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def log_in(page, username: str) -> None:
    page.goto("/admin/login/?next=/admin/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url("**/admin/")
    assert page.locator("#user-tools").inner_text().upper().find(username.upper()) >= 0


@pytest.fixture
def cycle(tiers):
    return {
        "lapsed1": add_customer(tiers, "ops@lapsed-one.io", past_due_days=20),
        "lapsed2": add_customer(tiers, "ci@lapsed-two.io", past_due_days=9),
        "grace": add_customer(tiers, "dev@in-grace.io", past_due_days=2),
        "paying": add_customer(tiers, "team@paying.io", tier="enterprise"),
    }


def test_staff_filters_lapsed_customers_and_revokes_two_with_confirmation(
    page, billing_admin, cycle, htpasswd_dir, screenshots
):
    assert file_users(htpasswd_dir, "pro") == ["ci", "dev", "ops"]
    log_in(page, "bea-billing")
    page.get_by_role("link", name="Customers", exact=True).first.click()
    page.wait_for_url("**/admin/customers/customer/")
    page.click("#changelist-filter >> text=Lapsed: past due over 7 days")
    page.wait_for_url("**/admin/customers/customer/?grace=lapsed")
    rows = page.locator("#result_list tbody tr")
    expect(rows).to_have_count(2)
    listed = rows.all_inner_texts()
    assert any("ops@lapsed-one.io" in row for row in listed) and any("ci@lapsed-two.io" in row for row in listed)

    for email in ("ops@lapsed-one.io", "ci@lapsed-two.io"):
        page.locator("#result_list tbody tr", has_text=email).locator("input.action-select").check()
    page.select_option("select[name=action]", "revoke_selected")
    page.click("button[name=index]")
    page.wait_for_selector("#losing-access")

    losing = page.locator("#losing-access").inner_text()
    assert "ops@lapsed-one.io" in losing and "ci@lapsed-two.io" in losing and "dev@in-grace.io" not in losing
    assert Customer.objects.get(pk=cycle["lapsed1"].pk).status == "active"  # nothing happens before confirming
    shoot(page, screenshots, "revoke-confirm.png")
    page.click("input[value='Yes, revoke']")
    page.wait_for_selector(".messagelist .success")
    assert "Revoked 2 customer(s)." in page.locator(".messagelist").inner_text()

    # The tier file no longer holds them; the customer still in grace keeps access.
    assert file_users(htpasswd_dir, "pro") == ["dev"]
    assert apache_verifies(htpasswd_dir / "pro.htpasswd", "dev", "pw-dev@in-grace.io")
    assert [Customer.objects.get(pk=cycle[k].pk).status for k in ("lapsed1", "lapsed2")] == ["revoked", "revoked"]

    # ...and the dashboard shows it.
    page.goto("/admin/")
    pro = page.locator("#dashboard-counts tr[data-tier=pro]")
    assert pro.locator("td.count-revoked").inner_text().strip() == "2"
    assert pro.locator("td.count-active").inner_text().strip() == "1"
    recent = page.locator("#dashboard-recent").inner_text()
    assert "Ops" in recent and "Ci" in recent and "revoked" in recent and "bea-billing" in recent
    assert "lapsed" not in page.locator("#dashboard-past-due").inner_text().lower().split("grace period")[1]
    files = page.locator("#dashboard-files tr[data-tier=pro]").inner_text()
    assert "in sync" in files and "\t1\t" in files
    assert page.locator("#tier-file-banner").count() == 0
    shoot(page, screenshots, "dashboard.png")


def test_rotation_shows_the_secret_once_and_reloading_does_not_show_it_again(
    page, billing_admin, cycle, htpasswd_dir, screenshots
):
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    log_in(page, "bea-billing")
    customer = cycle["paying"]
    page.goto(reverse("admin:customers_customer_change", args=[customer.pk]))
    assert "in the enterprise tier file now" in page.locator("#access-report h2").inner_text()
    shoot(page, screenshots, "customer-access.png")
    page.locator("#access-credentials tr[data-username=team]").locator("a.rotate-link").click()
    page.check("input[name=overlap][value='24h']")
    shoot(page, screenshots, "rotate-form.png")
    page.click("input[value='Rotate secret']")
    page.wait_for_selector("#credential-secret")

    secret = page.locator("#credential-secret").inner_text().strip()
    username = page.locator("#credential-username").inner_text().strip()
    assert username == "team-r2" and len(secret) >= 32
    login = page.locator("#docker-login").inner_text()
    assert f"--username {username} --password-stdin" in login and secret in login
    assert "team" in page.locator("#overlap-note").inner_text()
    page.click("#copy-secret")
    page.wait_for_function("document.getElementById('copy-secret').textContent === 'Copied'")
    assert page.evaluate("navigator.clipboard.readText()") == secret
    shoot(page, screenshots, "rotate.png")

    # During the overlap both the old and the new secret verify.
    path = htpasswd_dir / "enterprise.htpasswd"
    assert apache_verifies(path, "team", "pw-team@paying.io")
    assert apache_verifies(path, "team-r2", secret)

    page.reload()
    page.wait_for_load_state()
    assert secret not in page.content()
    assert page.locator("#credential-secret").count() == 0
    page.go_back()
    page.wait_for_load_state()
    assert secret not in page.content()
    # The reload issued nothing new.
    assert sorted(Credential.objects.filter(customer=customer).values_list("username", flat=True)) == [
        "team",
        "team-r2",
    ]
    assert AuditEvent.objects.filter(action="credential_issued", customer=customer).count() == 2


def test_support_user_cannot_revoke_even_by_posting_the_action_directly(page, support_user, cycle, htpasswd_dir):
    before = (htpasswd_dir / "pro.htpasswd").read_bytes()
    log_in(page, "sam-support")
    page.goto("/admin/customers/customer/?grace=lapsed")
    offered = page.locator("select[name=action] option").evaluate_all("options => options.map(o => o.value)")
    assert "suspend_selected" in offered and "revoke_selected" not in offered
    customer = cycle["lapsed1"]
    page.goto(reverse("admin:customers_customer_change", args=[customer.pk]))
    assert page.locator("#access-report a.rotate-link, #access-report a.revoke-link").count() == 0

    # Post the action the way the confirmation page would, with a valid CSRF token.
    page.goto("/admin/customers/customer/")
    token = page.locator("input[name=csrfmiddlewaretoken]").first.get_attribute("value")
    response = page.request.post(
        "/admin/customers/customer/",
        form={
            "csrfmiddlewaretoken": token,
            "action": "revoke_selected",
            "_selected_action": str(customer.pk),
            "confirmed": "yes",
        },
        headers={"Referer": page.url},
    )
    assert response.ok and "No action selected." in response.text()  # redirected back to the list
    rotate = page.request.post(
        reverse("admin:customers_credential_rotate", args=[customer.credentials.get().pk]),
        form={"csrfmiddlewaretoken": token, "overlap": "", "token": "x"},
        headers={"Referer": page.url},
    )
    assert rotate.status == 403
    assert Customer.objects.get(pk=customer.pk).status == "active"
    assert (htpasswd_dir / "pro.htpasswd").read_bytes() == before
    assert not AuditEvent.objects.filter(action="revoked").exists()
