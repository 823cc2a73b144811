"""The whole chain with the real programs: a staff change, the tier file,
the proxy's answer, a customer's pull.

A real docker-registry holds two images pushed with skopeo. Apache (and
nginx, the same chain) runs the fragment ``render_proxy_config`` prints, as
www-data, and reads the tier files registry-admin writes. Pro reaches every
repository no tier reserves; Enterprise reserves ``example/faktory-ent`` and
includes Pro.
"""
from __future__ import annotations

import grp
import hashlib
import io
import json
import stat
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from customers import services
from customers.models import Customer, Tier

from .conftest import COMMAND
from .servers import (
    OCI_MANIFEST,
    Proxy,
    Recorder,
    Registry,
    free_port,
    push_image,
    recording_upstream,  # noqa: F401  (fixture)
    registry_server,  # noqa: F401  (fixture)
    remove_tree,
    request,
    self_signed_certificate,
    skopeo_copy_out,
    skopeo_inspect,
    start_apache,
    start_nginx,
    stop_apache,
    stop_nginx,
    world_readable_dir,
)

pytestmark = [
    pytest.mark.system,
    pytest.mark.django_db(transaction=True),
    # The admin requests run without collectstatic; WhiteNoise only warns about it.
    pytest.mark.filterwarnings("ignore:No directory at:UserWarning"),
]

PRO_REPO = "example/faktory"
ENT_REPO = "example/faktory-ent"
TAG = "1.0"
PRO = ("pro-ci", "pro-secret-1")
ENT = ("ent-ci", "ent-secret-1")


@pytest.fixture(scope="module")
def registry(registry_server, tmp_path_factory) -> Registry:  # noqa: F811  (fixture)
    work = tmp_path_factory.mktemp("images")
    for repository in (PRO_REPO, ENT_REPO):
        push_image(registry_server, work, repository, TAG)
    return registry_server


@pytest.fixture
def www_root():
    root = world_readable_dir("registry-admin-e2e-")
    yield root
    remove_tree(root)


@pytest.fixture
def htpasswd_dir(settings, www_root) -> Path:
    """Overrides conftest's: the proxy's www-data workers must reach the files."""
    directory = www_root / "htpasswd"
    settings.HTPASSWD_DIR = directory
    settings.HTPASSWD_FILE_GROUP = "www-data"
    return directory


@pytest.fixture
def access_tiers(htpasswd_dir) -> dict[str, Tier]:
    pro = Tier.objects.create(slug="pro", name="Pro", position=1)
    enterprise = Tier.objects.create(
        slug="enterprise", name="Enterprise", position=2, repository_prefixes=f"{ENT_REPO}\n"
    )
    enterprise.includes.add(pro)
    return {"pro": pro, "enterprise": enterprise}


def add_customer(tier: Tier, username: str, password: str) -> Customer:
    customer = services.create_customer(name=username, email=f"{username}@example.com", tier=tier, actor=COMMAND)
    services.issue_credential(customer, actor=COMMAND, username=username, password=password)
    return customer


@pytest.fixture
def customers(access_tiers) -> dict[str, Customer]:
    return {
        "pro": add_customer(access_tiers["pro"], *PRO),
        "enterprise": add_customer(access_tiers["enterprise"], *ENT),
    }


def launch_proxy(kind: str, www_root: Path, upstream: str, tls_files: tuple[Path, Path] | None = None) -> Proxy:
    """Render the config with the command, as an operator would, and start the proxy on it."""
    port = free_port()
    tls_args = ["--tls-cert", str(tls_files[0]), "--tls-key", str(tls_files[1])] if tls_files else []
    out = io.StringIO()
    call_command(
        "render_proxy_config", kind, "--listen", f"127.0.0.1:{port}", "--upstream", upstream, *tls_args, stdout=out
    )
    root = www_root / kind
    root.mkdir(mode=0o755)
    return (start_apache if kind == "apache" else start_nginx)(root, port, out.getvalue(), tls=bool(tls_files))


def shut_down(proxy: Proxy) -> None:
    (stop_apache if proxy.kind == "apache" else stop_nginx)(proxy)


@pytest.fixture(params=["apache", "nginx"])
def proxy(request, registry, customers, www_root):
    server = launch_proxy(request.param, www_root, registry.url)
    yield server
    shut_down(server)


def manifest_path(repository: str, reference: str = TAG) -> str:
    return f"/v2/{repository}/manifests/{reference}"


def get_manifest(proxy: Proxy, auth, repository: str = PRO_REPO) -> int:
    return request("GET", proxy.port, manifest_path(repository), auth=auth, headers={"Accept": OCI_MANIFEST}).status


def test_tier_files_are_mode_0640_group_www_data(customers, htpasswd_dir):
    www_data = grp.getgrnam("www-data").gr_gid
    for slug in ("pro", "enterprise"):
        info = (htpasswd_dir / f"{slug}.htpasswd").stat()
        assert stat.S_IMODE(info.st_mode) == 0o640
        assert info.st_gid == www_data
    assert stat.S_IMODE(htpasswd_dir.stat().st_mode) & 0o005 == 0o005  # www-data may enter


# --- Pulls ---------------------------------------------------------------------------------


def test_customer_of_each_tier_inspects_and_copies_their_images(proxy, registry, tmp_path):
    for creds, repository in ((PRO, PRO_REPO), (ENT, ENT_REPO), (ENT, PRO_REPO)):
        image = registry.images[f"{repository}:{TAG}"]
        inspected = skopeo_inspect(proxy.port, f"{repository}:{TAG}", creds)
        assert inspected.returncode == 0, f"{creds[0]} {repository}: {inspected.stderr}\n{proxy.log_tail()}"
        assert json.loads(inspected.stdout)["Digest"] == image.manifest_digest

        dest = tmp_path / f"{creds[0]}-{repository.replace('/', '_')}"
        copied = skopeo_copy_out(proxy.port, f"{repository}:{TAG}", creds, dest, TAG)
        assert copied.returncode == 0, copied.stderr
        index = json.loads((dest / "index.json").read_text())
        assert index["manifests"][0]["digest"] == image.manifest_digest
        layer = dest / "blobs" / "sha256" / image.layer_digest.split(":", 1)[1]
        assert hashlib.sha256(layer.read_bytes()).hexdigest() == image.layer_digest.split(":", 1)[1]


def test_login_check_accepts_every_tier_and_sets_the_api_version_header(proxy, registry):
    for creds in (PRO, ENT):
        response = request("GET", proxy.port, "/v2/", auth=creds)
        assert response.status == 200
        assert response.headers.get_all("Docker-Distribution-Api-Version") == ["registry/2.0"]
        # Reads other than GET reach the registry too.
        head = request("HEAD", proxy.port, manifest_path(PRO_REPO), auth=creds, headers={"Accept": OCI_MANIFEST})
        assert head.status == 200
        assert head.headers["Docker-Content-Digest"] == registry.images[f"{PRO_REPO}:{TAG}"].manifest_digest


def test_wrong_password_unknown_user_and_anonymous_get_401(proxy):
    for auth in ((PRO[0], "wrong"), (ENT[0], "wrong"), ("nobody", "whatever"), None):
        for path in ("/v2/", manifest_path(PRO_REPO), manifest_path(ENT_REPO)):
            response = request("GET", proxy.port, path, auth=auth)
            assert response.status == 401, (auth, path, response.status)
            # nginx repeats the (same) challenge once per tier file it tried.
            assert set(response.headers.get_all("WWW-Authenticate")) == {'Basic realm="Container registry"'}
            # Docker decides it talks to a v2 registry from this header on the 401.
            assert response.headers.get_all("Docker-Distribution-Api-Version") == ["registry/2.0"]
    assert skopeo_inspect(proxy.port, f"{PRO_REPO}:{TAG}", (PRO[0], "wrong")).returncode != 0
    assert skopeo_inspect(proxy.port, f"{PRO_REPO}:{TAG}", None).returncode != 0


@pytest.mark.parametrize("kind", ["apache", "nginx"])
def test_third_tier_down_the_provider_chain_pulls(kind, registry, customers, access_tiers, www_root):
    """Ultimate includes Enterprise (which includes Pro): its customers are
    checked third for unreserved repositories and second for Enterprise's,
    which takes nginx two error_page hops."""
    ultimate = Tier.objects.create(slug="ultimate", name="Ultimate", position=3)
    ultimate.includes.add(access_tiers["enterprise"])
    add_customer(ultimate, "ult-ci", "ult-secret-1")
    server = launch_proxy(kind, www_root, registry.url)
    try:
        for repository in (PRO_REPO, ENT_REPO):
            assert get_manifest(server, ("ult-ci", "ult-secret-1"), repository) == 200, server.log_tail()
            assert get_manifest(server, ("ult-ci", "wrong"), repository) == 401
        assert get_manifest(server, PRO, ENT_REPO) == 401
    finally:
        shut_down(server)


# --- Read-only ------------------------------------------------------------------------------


def test_writes_are_refused_even_with_valid_credentials_and_the_image_survives(proxy, registry):
    image = registry.images[f"{PRO_REPO}:{TAG}"]
    oci = {"Accept": OCI_MANIFEST, "Content-Type": OCI_MANIFEST}
    manifest = request("GET", registry.port, manifest_path(PRO_REPO, image.manifest_digest), headers=oci).body
    attempts = [
        ("PUT", manifest_path(PRO_REPO, "evil"), manifest, oci),
        ("PUT", manifest_path(PRO_REPO, TAG), manifest, oci),
        ("POST", f"/v2/{PRO_REPO}/blobs/uploads/", b"", {}),
        ("PATCH", f"/v2/{PRO_REPO}/blobs/uploads/00000000-0000-0000-0000-000000000000", b"x", {}),
        ("DELETE", manifest_path(PRO_REPO, image.manifest_digest), None, {}),
        ("DELETE", f"/v2/{PRO_REPO}/blobs/{image.layer_digest}", None, {}),
        ("TRACE", "/v2/", None, {}),
    ]
    for creds in (PRO, ENT):
        for method, path, body, headers in attempts:
            status = request(method, proxy.port, path, auth=creds, body=body, headers=headers).status
            assert status in (403, 405), (proxy.kind, creds[0], method, path, status)
    for method, path, body, headers in attempts:  # anonymous: never through either
        assert request(method, proxy.port, path, body=body, headers=headers).status in (401, 403, 405)

    # Intact: the tag still names the same manifest, and the layer is there.
    inspected = skopeo_inspect(proxy.port, f"{PRO_REPO}:{TAG}", PRO)
    assert inspected.returncode == 0, inspected.stderr
    assert json.loads(inspected.stdout)["Digest"] == image.manifest_digest
    assert request("HEAD", registry.port, f"/v2/{PRO_REPO}/blobs/{image.layer_digest}").status == 200
    assert request("GET", registry.port, manifest_path(PRO_REPO, "evil")).status == 404


def test_catalog_is_denied_to_customers(proxy, registry):
    assert request("GET", registry.port, "/v2/_catalog").status == 200  # the registry itself would answer
    for creds in (PRO, ENT, None):
        for path in ("/v2/_catalog", "/v2/_catalog?n=100"):
            assert request("GET", proxy.port, path, auth=creds).status == 403


# --- Scoping ------------------------------------------------------------------------------


def test_pro_customer_cannot_pull_the_enterprise_repository(proxy, registry):
    layer = registry.images[f"{ENT_REPO}:{TAG}"].layer_digest
    accept = {"Accept": OCI_MANIFEST}  # so that a leak would be a 200, not a 404
    paths = (manifest_path(ENT_REPO), f"/v2/{ENT_REPO}/tags/list", f"/v2/{ENT_REPO}/blobs/{layer}")
    for path in paths:
        assert request("GET", proxy.port, path, auth=PRO, headers=accept).status == 401, path
        assert request("GET", proxy.port, path, auth=ENT, headers=accept).status == 200, path
    # The same path written differently must not slip past the prefix.
    for path in (
        f"/v2/example/./faktory-ent/manifests/{TAG}",
        f"/v2/example//faktory-ent/manifests/{TAG}",
        f"/v2/example/%66aktory-ent/manifests/{TAG}",
        f"/v2/example/x/../faktory-ent/manifests/{TAG}",
        f"/v2/example/faktory-ent%2Fmanifests/{TAG}",
    ):
        assert request("GET", proxy.port, path, auth=PRO, headers=accept).status in (400, 401, 403, 404), path
    assert skopeo_inspect(proxy.port, f"{ENT_REPO}:{TAG}", PRO).returncode != 0
    assert skopeo_inspect(proxy.port, f"{ENT_REPO}:{TAG}", ENT).returncode == 0


# --- Access changes reach the very next request ---------------------------------------------------


def _admin_client() -> Client:
    staff = get_user_model().objects.create_superuser("staff", "staff@example.com", "staff-password")
    client = Client()
    client.force_login(staff)
    return client


def _admin_action(client: Client, action: str, customer: Customer, **extra) -> None:
    response = client.post(
        reverse("admin:customers_customer_changelist"),
        {"action": action, "_selected_action": [customer.pk], **extra},
    )
    assert response.status_code == 302, response.content[:500]


def _via_services(customer: Customer, take_away: str) -> tuple:
    service = services.revoke if take_away == "revoke" else services.suspend
    return (lambda: service(customer, actor=COMMAND), lambda: services.reactivate(customer, actor=COMMAND))


def _via_admin(customer: Customer, take_away: str) -> tuple:
    client = _admin_client()
    action = "revoke_selected" if take_away == "revoke" else "suspend_selected"
    # Both actions ask for confirmation first; post the confirmed form.
    return (lambda: _admin_action(client, action, customer, confirmed="yes"),
            lambda: _admin_action(client, "reactivate_selected", customer))


def _via_orm(customer: Customer, take_away: str) -> tuple:
    def set_status(status: str):
        row = Customer.objects.get(pk=customer.pk)
        row.status = status
        row.save()
    return (lambda: set_status(take_away + "d" if take_away == "revoke" else "suspended"),
            lambda: set_status("active"))


@pytest.mark.parametrize("take_away", ["revoke", "suspend"])
@pytest.mark.parametrize("via", [_via_services, _via_admin, _via_orm], ids=["services", "admin", "orm"])
def test_access_change_applies_on_the_very_next_request(proxy, customers, via, take_away):
    remove, restore = via(customers["pro"], take_away)
    assert get_manifest(proxy, PRO) == 200
    remove()
    assert Customer.objects.get(pk=customers["pro"].pk).status == ("revoked" if take_away == "revoke" else "suspended")
    assert get_manifest(proxy, PRO) == 401
    assert request("GET", proxy.port, "/v2/", auth=PRO).status == 401
    assert get_manifest(proxy, ENT) == 200  # nobody else is affected
    restore()
    assert get_manifest(proxy, PRO) == 200


def test_tier_change_moves_access_on_the_next_request(proxy, customers, access_tiers):
    assert get_manifest(proxy, ENT, ENT_REPO) == 200
    services.change_tier(customers["enterprise"], access_tiers["pro"], actor=COMMAND)
    assert get_manifest(proxy, ENT, ENT_REPO) == 401
    assert get_manifest(proxy, ENT, PRO_REPO) == 200  # still a customer, now of Pro
    services.change_tier(customers["pro"], access_tiers["enterprise"], actor=COMMAND)
    assert get_manifest(proxy, PRO, ENT_REPO) == 200


def test_revoked_credential_is_denied_while_the_customers_other_credential_works(proxy, customers):
    services.issue_credential(customers["pro"], actor=COMMAND, username="pro-laptop", password="laptop-secret")
    assert get_manifest(proxy, ("pro-laptop", "laptop-secret")) == 200
    services.revoke_credential(customers["pro"].credentials.get(username=PRO[0]), actor=COMMAND)
    assert get_manifest(proxy, PRO) == 401
    assert get_manifest(proxy, ("pro-laptop", "laptop-secret")) == 200


# --- TLS, and what reaches the upstream --------------------------------------------------------


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
@pytest.mark.parametrize("kind", ["apache", "nginx"])
def test_proxy_forwards_host_and_scheme_but_not_the_password(
    kind, tls, customers, www_root, recording_upstream  # noqa: F811 (fixture)
):
    upstream: Recorder = recording_upstream
    server = launch_proxy(kind, www_root, upstream.url, self_signed_certificate(www_root) if tls else None)
    try:
        response = request("GET", server.port, f"/v2/{PRO_REPO}/tags/list", auth=PRO, tls=tls,
                           headers={"Host": "registry.example.com"})
    finally:
        shut_down(server)
    assert response.status == 200
    method, path, headers = upstream.seen[-1]
    assert (method, path) == ("GET", f"/v2/{PRO_REPO}/tags/list")
    assert headers["host"] == "registry.example.com"  # ProxyPreserveHost: the registry builds URLs with it
    assert headers["x-forwarded-proto"] == ("https" if tls else "http")
    assert "authorization" not in headers  # the customer's password stops at the proxy
    assert response.headers.get_all("Docker-Distribution-Api-Version") == ["registry/2.0"]


@pytest.mark.parametrize("kind", ["apache", "nginx"])
def test_pull_over_tls(kind, registry, customers, www_root):
    server = launch_proxy(kind, www_root, registry.url, self_signed_certificate(www_root))
    try:
        inspected = skopeo_inspect(server.port, f"{PRO_REPO}:{TAG}", PRO)
        assert inspected.returncode == 0, f"{inspected.stderr}\n{server.log_tail()}"
        assert json.loads(inspected.stdout)["Digest"] == registry.images[f"{PRO_REPO}:{TAG}"].manifest_digest
        assert request("GET", server.port, "/v2/", auth=(PRO[0], "wrong"), tls=True).status == 401
    finally:
        shut_down(server)


# --- Under load ----------------------------------------------------------------------------------

CYCLES = 200
LOAD_THREADS = 3
MAX_LOAD_REQUESTS = 20_000
LOAD_DEADLINE = 180.0  # seconds; the test fails rather than hangs


def test_revoke_cycles_under_load_never_break_an_untouched_customer(proxy, access_tiers):
    others = [add_customer(access_tiers["pro"], f"churn-{n}", f"churn-secret-{n}") for n in range(5)]
    stop = threading.Event()
    statuses: dict[str, Counter] = {"untouched-pro": Counter(), "untouched-ent": Counter(), "churn": Counter()}
    errors: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + LOAD_DEADLINE

    def load(name: str, creds, repository: str) -> None:
        sent = 0
        while not stop.is_set() and sent < MAX_LOAD_REQUESTS // LOAD_THREADS and time.monotonic() < deadline:
            try:
                status = get_manifest(proxy, creds, repository)
            except OSError as exc:
                with lock:
                    errors.append(f"{name}: {exc!r}")
                continue
            sent += 1
            with lock:
                statuses[name][status] += 1

    def churn_load() -> None:
        n = 0
        while not stop.is_set() and time.monotonic() < deadline:
            status = get_manifest(proxy, (f"churn-{n % 5}", f"churn-secret-{n % 5}"))
            n += 1
            with lock:
                statuses["churn"][status] += 1

    threads = [
        threading.Thread(target=load, args=("untouched-pro", PRO, PRO_REPO)),
        threading.Thread(target=load, args=("untouched-ent", ENT, ENT_REPO)),
        threading.Thread(target=load, args=("untouched-pro", PRO, PRO_REPO)),
        threading.Thread(target=churn_load),
    ]
    for thread in threads:
        thread.start()
    started = time.monotonic()
    try:
        for cycle in range(CYCLES):
            customer = others[cycle % len(others)]
            services.revoke(customer, actor=COMMAND)
            services.reactivate(customer, actor=COMMAND)
            assert time.monotonic() < deadline, f"only {cycle} cycles within {LOAD_DEADLINE}s"
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    elapsed = time.monotonic() - started

    assert not errors, errors[:5]
    assert set(statuses["untouched-pro"]) == {200}, (statuses, proxy.log_tail())
    assert set(statuses["untouched-ent"]) == {200}, (statuses, proxy.log_tail())
    # The churning customers were sometimes in, sometimes out; never a 5xx.
    assert set(statuses["churn"]) <= {200, 401}, statuses
    served = sum(statuses["untouched-pro"].values()) + sum(statuses["untouched-ent"].values())
    assert served >= 100, f"the load was too thin to prove anything: {statuses} in {elapsed:.1f}s"
    print(f"\n{proxy.kind}: {CYCLES} revoke/reactivate cycles in {elapsed:.1f}s under {served} requests: {statuses}")
    for n in range(5):  # all reactivated at the end
        assert get_manifest(proxy, (f"churn-{n}", f"churn-secret-{n}")) == 200
