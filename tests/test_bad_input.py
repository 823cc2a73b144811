"""Bad HTTP input to every endpoint gets a 4xx, never a 500.

Huge bodies, wrong methods, wrong or broken content types, too many
fields, junk ids: a client's mistake (or an attack) must never look like
our failure, which would page someone and hide real 500s. The endpoints
are read from the URL configuration, so a new one is covered by default.
"""
from __future__ import annotations

import pytest
from django.conf import settings
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from customers import services
from customers.models import Customer, Tier

from .conftest import COMMAND

pytestmark = pytest.mark.django_db

HUGE = settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1024 * 1024
WRONG_METHODS = ["PUT", "PATCH", "DELETE", "TRACE", "CONNECT", "PROPFIND", "BREW"]


def top_level_paths() -> list[str]:
    """Every endpoint outside the admin, as a concrete path."""
    paths = []
    for entry in get_resolver().url_patterns:
        if isinstance(entry, URLResolver):
            continue  # the admin; covered below with its own pages
        assert isinstance(entry, URLPattern)
        route = str(entry.pattern)
        assert "<" not in route, f"give {route} a sample value here"
        paths.append("/" + route.lstrip("^").rstrip("$"))
    return paths


ADMIN_PATHS = [
    "/admin/",
    "/admin/login/",
    "/admin/logout/",
    "/admin/customers/customer/",
    "/admin/customers/customer/add/",
    "/admin/customers/customer/{customer}/change/",
    "/admin/customers/customer/{customer}/issue-credential/",
    "/admin/customers/customer/{customer}/delete/",
    "/admin/customers/credential/",
    "/admin/customers/credential/{credential}/change/",
    "/admin/customers/tier/",
    "/admin/customers/tier/add/",
    "/admin/customers/auditevent/",
    "/admin/customers/billingevent/",
    "/admin/customers/tierfilestatus/",
]


@pytest.fixture
def webhook_configured(settings):
    # With the secret unset the webhook answers 503 by design (see the
    # contract); configured, it must answer bad input with 4xx.
    settings.STRIPE_WEBHOOK_SECRET = "whsec_test_bad_input"


@pytest.fixture
def paths(db, webhook_configured) -> list[str]:
    tier = Tier.objects.create(slug="pro", name="Pro")
    customer = services.create_customer(name="Acme", email="ops@acme.io", tier=tier, actor=COMMAND)
    credential = services.issue_credential(customer, actor=COMMAND, password="pw-acme").credential
    admin_paths = [p.format(customer=customer.pk, credential=credential.pk) for p in ADMIN_PATHS]
    return top_level_paths() + admin_paths


@pytest.fixture
def anonymous() -> Client:
    # CSRF checks on, as for a real browser (the test client skips them by default).
    return Client(enforce_csrf_checks=True, raise_request_exception=False)


@pytest.fixture
def staff(admin_user) -> Client:
    client = Client(raise_request_exception=False)
    client.force_login(admin_user)
    return client


def assert_4xx(response, what: str) -> None:
    assert 400 <= response.status_code < 500, f"{what}: {response.status_code} {response.content[:300]!r}"


def test_the_url_list_covers_healthz(paths):
    assert "/healthz" in paths


@pytest.mark.parametrize("who", ["anonymous", "staff"])
def test_wrong_methods_get_4xx(paths, who, request):
    client = request.getfixturevalue(who)
    for path in paths:
        for method in WRONG_METHODS:
            response = client.generic(method, path)
            assert_4xx(response, f"{who} {method} {path}")


@pytest.mark.parametrize("who", ["anonymous", "staff"])
@pytest.mark.parametrize(
    "content_type",
    ["application/x-www-form-urlencoded", "application/json", "application/octet-stream"],
)
def test_huge_bodies_get_4xx(paths, who, content_type, request):
    client = request.getfixturevalue(who)
    body = b"a=" + b"x" * HUGE if "form" in content_type else b"{" + b'"x": 1,' * (HUGE // 7) + b"}"
    for path in paths:
        response = client.generic("POST", path, data=body, content_type=content_type)
        assert_4xx(response, f"{who} POST {len(body)} bytes of {content_type} to {path}")


BROKEN_BODIES = {
    "json to a form": ("application/json", b'{"username": "admin"}'),
    "plain text": ("text/plain", b"hello"),
    "xml": ("application/xml", b"<a>1</a>"),
    "multipart without boundary": ("multipart/form-data", b"--x\r\n"),
    "multipart with a broken body": ("multipart/form-data; boundary=zz", b"--zz\r\nContent-Disposition: form-da"),
    "unknown charset": ("application/x-www-form-urlencoded; charset=no-such-charset", b"a=b"),
    "invalid utf-8": ("application/x-www-form-urlencoded", b"username=\xff\xfe&password=\xc3("),
    "too many fields": ("application/x-www-form-urlencoded", "&".join(f"f{i}=1" for i in range(1500)).encode()),
    "not json at all": ("application/json", b"\x00\x01\x02"),
}


@pytest.mark.parametrize("case", sorted(BROKEN_BODIES))
def test_wrong_content_types_never_500(paths, anonymous, case):
    content_type, body = BROKEN_BODIES[case]
    for path in paths:
        response = anonymous.generic("POST", path, data=body, content_type=content_type)
        # Anonymous POSTs carry no CSRF token, so the admin refuses them (403);
        # the point is that nothing breaks on the way there.
        assert_4xx(response, f"POST {case} to {path}")


@pytest.mark.parametrize("case", sorted(BROKEN_BODIES))
def test_wrong_content_types_from_staff_never_500(paths, staff, case):
    content_type, body = BROKEN_BODIES[case]
    for path in paths:
        response = staff.generic("POST", path, data=body, content_type=content_type)
        # Past CSRF (the test client skips it), admin forms answer a bad
        # body with the form and its errors (200) or a redirect.
        assert response.status_code < 500, f"staff POST {case} to {path}: {response.status_code}"


@pytest.mark.parametrize("bad_id", ["abc", "99999999999999999999999", "1.5", ""])
def test_malformed_ids_in_an_admin_action_get_400(staff, paths, bad_id):
    customer = Customer.objects.get()
    response = staff.post(
        "/admin/customers/customer/",
        {"action": "revoke_selected", "_selected_action": [str(customer.pk), bad_id], "confirmed": "yes"},
    )
    assert response.status_code == 400
    assert Customer.objects.get().status == Customer.Status.ACTIVE  # nothing half-done


@pytest.mark.parametrize(
    "data",
    [
        {"action": "no_such_action", "_selected_action": ["1"]},
        {"action": "", "_selected_action": []},
        {"action": "suspend_selected", "_selected_action": ["-1"], "index": "zz"},
    ],
)
def test_junk_admin_actions_never_500(staff, data):
    response = staff.post("/admin/customers/customer/", data)
    assert response.status_code < 500, f"{data}: {response.status_code}"
    assert Customer.objects.filter(status=Customer.Status.REVOKED).count() == 0


@pytest.mark.parametrize(
    "path",
    [
        "/admin/customers/customer/abc/change/",
        "/admin/customers/customer/99999999999999999999999/change/",
        "/admin/customers/customer/99999999/issue-credential/",
        "/admin/customers/credential/%00/change/",
        "/admin/customers/customer/?status__exact=nonsense",
        "/admin/customers/customer/?o=999",
        "/admin/customers/customer/?p=-1",
        "/admin/customers/customer/?q=" + "%FF" * 10,
        "/admin/customers/auditevent/?created_at__gte=not-a-date",
    ],
)
def test_junk_admin_urls_never_500(staff, path):
    response = staff.get(path)
    assert response.status_code < 500, f"{path}: {response.status_code}"


def test_junk_issue_credential_form_is_refused_with_errors(staff, paths):
    customer = Customer.objects.get()
    response = staff.post(
        f"/admin/customers/customer/{customer.pk}/issue-credential/",
        {"token": "forged", "username": "bad name:x", "expires_at": "tomorrow-ish", "label": "x" * 5000},
    )
    assert response.status_code < 500
    assert customer.credentials.count() == 1


def test_bad_host_header_is_400(anonymous):
    response = anonymous.get("/healthz", HTTP_HOST="evil.example.com")
    assert response.status_code == 400
