"""import_htpasswd adopts an existing Apache htpasswd file: every user keeps
their password, as Apache's own `htpasswd -vb` confirms afterwards."""

from __future__ import annotations

import subprocess

import bcrypt
import pytest

from customers.models import AuditEvent, Credential, Customer

from .conftest import apache_verifies, file_users, require_program
from .importing_helpers import file_state, run, run_failing, write_csv

pytestmark = pytest.mark.django_db(transaction=True)

USERS = {
    "ann": ("-B", "pw-ann"),  # bcrypt, $2y$
    "bob": ("-m", "pw-bob"),  # $apr1$
    "cy@acme.io": ("-s", "pw-cy"),  # {SHA}
}


def apache_line(username: str, flag: str, password: str) -> str:
    result = subprocess.run(
        [require_program("htpasswd"), "-nb", flag, username, password],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return result.stdout.strip()


@pytest.fixture
def vendor_file(tmp_path):
    """A vendor's fpro.passwd: bcrypt, $apr1$, {SHA}, a $2b$ line, a comment and a blank line."""
    lines = ["# pro customers", ""]
    lines += [apache_line(user, flag, pw) for user, (flag, pw) in USERS.items()]
    b2 = bcrypt.hashpw(b"pw-dee", bcrypt.gensalt(5, prefix=b"2b")).decode()
    assert b2.startswith("$2b$")
    lines.append(f"dee:{b2}")
    path = tmp_path / "fpro.passwd"
    path.write_text("\n".join(lines) + "\n")
    return path


PASSWORDS = {**{user: pw for user, (_flag, pw) in USERS.items()}, "dee": "pw-dee"}


def test_adopted_users_keep_their_passwords(tiers, htpasswd_dir, vendor_file):
    out, err = run("import_htpasswd", "pro", str(vendor_file))
    assert "4 user(s) into pro: 4 with a new placeholder customer" in out
    assert "line 4: warning: user 'bob': apr1-md5 hash" in err
    assert "line 5: warning: user 'cy@acme.io': SHA-1 hash" in err
    tier_file = htpasswd_dir / "pro.htpasswd"
    assert file_users(htpasswd_dir, "pro") == sorted(PASSWORDS)
    for username, password in PASSWORDS.items():
        assert apache_verifies(tier_file, username, password), username
        assert not apache_verifies(tier_file, username, "wrong"), username
    # $2b$ is stored (and written) as $2y$, the prefix APR verifies natively.
    assert Credential.objects.get(username="dee").password_hash.startswith("$2y$05$")
    assert "$2b$" not in tier_file.read_text()


def test_placeholder_customers_are_flagged_for_review(tiers, vendor_file):
    run("import_htpasswd", "pro", str(vendor_file))
    ann = Customer.objects.get(credentials__username="ann")
    assert (ann.name, ann.email, ann.needs_review, ann.tier.slug) == ("ann", "ann@adopted.invalid", True, "pro")
    assert "fpro.passwd line 3" in ann.notes
    # A username that is an email address becomes the customer's email.
    assert Customer.objects.get(credentials__username="cy@acme.io").email == "cy@acme.io"
    created = AuditEvent.objects.filter(actor_label="import_htpasswd", action="created")
    assert sorted(e.changes["username"][1] for e in created) == ["ann", "bob", "cy@acme.io", "dee"]


def test_readopting_changes_nothing(tiers, htpasswd_dir, vendor_file):
    run("import_htpasswd", "pro", str(vendor_file))
    before, events = file_state(htpasswd_dir), AuditEvent.objects.count()
    out, _ = run("import_htpasswd", "pro", str(vendor_file))
    assert (
        "0 with a new placeholder customer (flagged for review), 0 added to an existing customer, "
        "0 with a changed hash, 4 unchanged" in out
    )
    assert file_state(htpasswd_dir) == before
    assert (Customer.objects.count(), AuditEvent.objects.count()) == (4, events)


def test_user_of_another_tier_is_refused(tiers, htpasswd_dir, vendor_file, tmp_path):
    ent = tmp_path / "fent.passwd"
    ent.write_text(apache_line("eve", "-B", "pw-eve") + "\n" + apache_line("bob", "-B", "other") + "\n")
    run("import_htpasswd", "enterprise", str(ent))
    before = file_state(htpasswd_dir)

    error, stderr = run_failing("import_htpasswd", "pro", str(vendor_file))
    assert "line 4: user 'bob' already belongs to tier 'enterprise' (bob@adopted.invalid)" in stderr
    assert "nothing was changed" in error
    assert file_state(htpasswd_dir) == before
    assert Customer.objects.filter(tier__slug="pro").count() == 0

    out, err = run("import_htpasswd", "pro", str(vendor_file), "--skip-conflicts")
    assert "line 4: user 'bob' already belongs to tier 'enterprise'" in err and "(skipped)" in err
    assert file_users(htpasswd_dir, "pro") == ["ann", "cy@acme.io", "dee"]
    assert apache_verifies(htpasswd_dir / "enterprise.htpasswd", "bob", "other")


def test_malformed_lines_are_reported_by_line(tiers, htpasswd_dir, tmp_path):
    path = tmp_path / "bad.passwd"
    path.write_text(
        apache_line("ann", "-B", "pw") + "\n"
        "no-separator\n"
        "bob:plaintext-password\n"
        "bad user:$apr1$Jc5ejRXN$CKJxuVzNlB1e9FYLxjo/J.\n" + apache_line("ANN", "-B", "pw2") + "\n"
    )
    before = file_state(htpasswd_dir)
    _error, stderr = run_failing("import_htpasswd", "pro", str(path))
    assert "line 2: expected 'username:hash'" in stderr
    assert "line 3: user 'bob': unsupported or malformed hash" in stderr
    assert "line 4: invalid username 'bad user'" in stderr
    assert "line 5: duplicate user 'ANN' (already on line 1)" in stderr
    assert Customer.objects.count() == 0
    assert file_state(htpasswd_dir) == before


def test_unknown_tier_is_an_error(tiers, vendor_file):
    error, _ = run_failing("import_htpasswd", "gold", str(vendor_file))
    assert "unknown tier 'gold'" in error


def test_customer_import_completes_the_placeholders(tiers, htpasswd_dir, vendor_file, tmp_path):
    """The onboarding order: adopt the files (passwords kept), then import the
    spreadsheet naming each username; its row completes the placeholder."""
    run("import_htpasswd", "pro", str(vendor_file))
    ann_hash = Credential.objects.get(username="ann").password_hash
    sheet = write_csv(tmp_path / "c.csv", "email,name,tier,username\nann@acme.io,Ann Example,pro,ann\n")
    out, _ = run("import_customers", str(sheet))
    assert "Created 0, updated 1, unchanged 0." in out
    ann = Customer.objects.get(credentials__username="ann")
    assert (ann.email, ann.name, ann.needs_review) == ("ann@acme.io", "Ann Example", False)
    assert Credential.objects.get(username="ann").password_hash == ann_hash
    assert apache_verifies(htpasswd_dir / "pro.htpasswd", "ann", "pw-ann")
    assert Customer.objects.count() == 4
