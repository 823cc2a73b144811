"""export_customers writes every customer; its CSV imports back unchanged."""

from __future__ import annotations

import csv
import io
import json
import stat

import pytest

from customers import services
from customers.models import AuditEvent, Credential, Customer

from .conftest import COMMAND, apache_verifies
from .importing_helpers import file_state, run, run_failing

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def customers(tiers):
    ann = services.create_customer(
        name="Acme, Inc.", email="ann@acme.io", tier=tiers["pro"], actor=COMMAND, stripe_customer_id="cus_ANN"
    )
    services.issue_credential(ann, actor=COMMAND, username="ann", password="pw-ann")
    services.issue_credential(ann, actor=COMMAND, username="ann-ci", password="pw-ci")
    bob = services.create_customer(name="Bob", email="bob@acme.io", tier=tiers["enterprise"], actor=COMMAND)
    services.issue_credential(bob, actor=COMMAND, username="bob", password="pw-bob")
    services.suspend(bob, actor=COMMAND)
    services.set_payment_status(bob, "past_due", actor=COMMAND)
    services.create_customer(name="No Credential", email="nc@acme.io", tier=tiers["pro"], actor=COMMAND)
    return ann, bob


def parse_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_csv_has_every_customer_with_tier_statuses_and_usernames_and_no_hashes(customers):
    out, err = run("export_customers")
    assert "$2y$" not in out
    rows = parse_csv(out)
    assert [
        (r["email"], r["tier"], r["status"], r["payment_status"], r["username"], r["other_usernames"]) for r in rows
    ] == [
        ("ann@acme.io", "pro", "active", "current", "ann", "ann-ci"),
        ("bob@acme.io", "enterprise", "suspended", "past_due", "bob", ""),
        ("nc@acme.io", "pro", "active", "current", "", ""),
    ]
    assert rows[0]["name"] == "Acme, Inc." and rows[0]["stripe_customer_id"] == "cus_ANN"
    assert "password_hash" not in rows[0]
    assert "Exported 3 customer(s)." in err


def test_exported_csv_imports_back_unchanged(customers, htpasswd_dir, tmp_path):
    out, _ = run("export_customers")
    path = tmp_path / "export.csv"
    path.write_text(out)
    before = file_state(htpasswd_dir)
    state = list(Customer.objects.order_by("pk").values())
    events = AuditEvent.objects.count()
    result, _ = run("import_customers", str(path))
    assert "Created 0, updated 0, unchanged 3." in result
    assert file_state(htpasswd_dir) == before
    assert list(Customer.objects.order_by("pk").values()) == state
    assert AuditEvent.objects.count() == events


def test_csv_with_hashes_rebuilds_an_empty_database(customers, htpasswd_dir, tmp_path):
    out, _ = run("export_customers", "--with-hashes")
    hashes = {r["username"]: r["password_hash"] for r in parse_csv(out) if r["username"]}
    assert hashes["ann"].startswith("$2y$")
    path = tmp_path / "export.csv"
    path.write_text(out)
    Customer.objects.all().delete()
    assert Credential.objects.count() == 0

    # A customer exported without a credential gets a new one, as any new
    # customer does, with a generated secret.
    result, _ = run("import_customers", str(path), "--credentials-out", str(tmp_path / "secrets.csv"))
    assert "Created 3, updated 0, unchanged 0." in result
    assert "1 generated secret(s) written" in result
    assert (
        dict(Credential.objects.exclude(customer__email="nc@acme.io").values_list("username", "password_hash"))
        == hashes
    )
    assert apache_verifies(htpasswd_dir / "pro.htpasswd", "ann", "pw-ann")
    bob = Customer.objects.get(email="bob@acme.io")
    assert (bob.status, bob.payment_status, bob.tier.slug) == ("suspended", "past_due", "enterprise")
    assert Customer.objects.get(email="ann@acme.io").stripe_customer_id == "cus_ANN"
    # And that import, exported again, is unchanged on a second import.
    assert "unchanged 3" in run("import_customers", str(path))[0]


def test_json_lists_every_credential(customers):
    out, _ = run("export_customers", "--format", "json")
    records = json.loads(out)
    assert [r["email"] for r in records] == ["ann@acme.io", "bob@acme.io", "nc@acme.io"]
    assert [c["username"] for c in records[0]["credentials"]] == ["ann", "ann-ci"]
    assert "password_hash" not in records[0]["credentials"][0]
    with_hashes = json.loads(run("export_customers", "--format", "json", "--with-hashes")[0])
    assert with_hashes[0]["credentials"][1]["password_hash"] == Credential.objects.get(username="ann-ci").password_hash


def test_output_file_is_private_and_never_overwritten(customers, tmp_path):
    path = tmp_path / "out.csv"
    run("export_customers", "--with-hashes", "--output", str(path))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(parse_csv(path.read_text())) == 3
    error, _ = run_failing("export_customers", "--output", str(path))
    assert "cannot create" in error
