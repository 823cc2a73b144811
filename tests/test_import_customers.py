"""import_customers: all-or-nothing, line-numbered problems, an idempotent
upsert keyed by email, secrets only in a 0600 file, one rewrite per tier."""

from __future__ import annotations

import csv
import io
import stat
from collections import Counter

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from customers import htpasswd, importing, services, sync
from customers.models import AuditEvent, Credential, Customer

from .conftest import COMMAND, apache_verifies, file_users
from .importing_helpers import file_state, run, run_failing, write_csv

pytestmark = pytest.mark.django_db(transaction=True)

GOOD = "email,name,tier,username,password\nann@acme.io,Ann,pro,ann,pw-ann\n"


def nothing_changed(htpasswd_dir, before) -> None:
    assert Customer.objects.count() == 0
    assert Credential.objects.count() == 0
    assert AuditEvent.objects.count() == 0
    assert file_state(htpasswd_dir) == before


@pytest.mark.parametrize(
    ("bad_rows", "line", "message"),
    [
        ("bob@,Bob,pro,bob,pw\n", 3, "invalid email 'bob@'"),
        ("bob@acme.io,Bob,gold,bob,pw\n", 3, "unknown tier 'gold'"),
        ("ANN@acme.io,Ann again,pro,ann2,pw\n", 3, "duplicate email 'ANN@acme.io' (already on line 2)"),
        ("bob@acme.io,Bob,pro,ANN,pw\n", 3, "duplicate username 'ANN' (already on line 2)"),
        ("bob@acme.io,Bob,pro,bob:x,pw\n", 3, "invalid username 'bob:x'"),
        # A quoted multi-line record spans lines 3-4 (refused too: a name is one
        # line); the record after it starts on line 5.
        ('cy@acme.io,"Cy\nLtd",pro,cy,pw\nbob@acme.io,Bob,pro,"bo\nb",pw\n', 5, "invalid username 'bo\\nb'"),
        ("bob@acme.io,Bob,pro,bob,pw,extra\n", 3, "expected 5 fields, found 6"),
        ("bob@acme.io,Bob,pro,bob," + "x" * 73 + "\n", 3, "the password is longer than 72 bytes"),
        ("bob@acme.io,Bob,pro,bob," + "é" * 37 + "\n", 3, "the password is longer than 72 bytes"),  # 37 chars, 74 bytes
    ],
    ids=["email", "tier", "dup-email", "dup-username", "colon", "newline", "fields", "long", "long-utf8"],
)
def test_invalid_row_is_reported_by_line_and_changes_nothing(tiers, htpasswd_dir, tmp_path, bad_rows, line, message):
    before = file_state(htpasswd_dir)
    path = write_csv(tmp_path / "c.csv", GOOD + bad_rows)
    error, stderr = run_failing("import_customers", str(path))
    assert f"line {line}: {message}" in stderr
    assert "nothing was changed" in error
    nothing_changed(htpasswd_dir, before)


def test_invalid_status_is_reported_by_line(tiers, htpasswd_dir, tmp_path):
    before = file_state(htpasswd_dir)
    path = write_csv(
        tmp_path / "c.csv", "email,name,tier,status\nann@acme.io,Ann,pro,active\nbob@acme.io,Bob,pro,frozen\n"
    )
    _error, stderr = run_failing("import_customers", str(path), "--credentials-out", str(tmp_path / "s.csv"))
    assert "line 3: invalid status 'frozen'" in stderr
    nothing_changed(htpasswd_dir, before)
    assert not (tmp_path / "s.csv").exists()


def test_every_problem_is_reported_at_once(tiers, htpasswd_dir, tmp_path):
    path = write_csv(
        tmp_path / "c.csv",
        GOOD + "bad-email,B,pro,b,pw\nc@acme.io,C,gold,c,pw\nd@acme.io,D,pro,d:d,pw\ne@acme.io,E,pro,e,pw\n",
    )
    error, stderr = run_failing("import_customers", str(path))
    assert [line.split(":")[0] for line in stderr.splitlines()] == ["line 3", "line 4", "line 5"]
    assert error.startswith("3 problem(s) found")
    assert Customer.objects.count() == 0


def test_header_problems_are_line_1(tiers, tmp_path):
    path = write_csv(tmp_path / "c.csv", "email,name,pasword\nann@acme.io,Ann,pw\n")
    _error, stderr = run_failing("import_customers", str(path))
    assert "line 1: unknown column 'pasword'" in stderr
    assert "line 1: missing the required column 'tier'" in stderr


def test_not_utf8_is_reported_by_line(tiers, tmp_path):
    path = tmp_path / "c.csv"
    path.write_bytes(GOOD.encode() + b"b@acme.io,B\xe9b,pro,b,pw\n")
    _error, stderr = run_failing("import_customers", str(path))
    assert "line 3: the file is not UTF-8 text" in stderr


@pytest.mark.parametrize("secret_column", ["password", "password_hash"])
def test_username_of_another_customer_is_refused(tiers, tmp_path, secret_column):
    # (A file of given hashes only is planned once, inside the transaction.)
    run("import_customers", str(write_csv(tmp_path / "a.csv", GOOD)))
    secret = "pw" if secret_column == "password" else htpasswd_bcrypt("pw")
    path = write_csv(
        tmp_path / "b.csv", f"email,name,tier,username,{secret_column}\nbob@acme.io,Bob,enterprise,Ann,{secret}\n"
    )
    _error, stderr = run_failing("import_customers", str(path))
    assert "line 2: the username 'Ann' belongs to another customer (ann@acme.io, tier pro)" in stderr
    assert Customer.objects.count() == 1


def test_bom_crlf_and_quoted_fields(tiers, htpasswd_dir, tmp_path):
    text = (
        "email,name,tier,username,password,status\n"
        'ann@acme.io,"Acme, Inc. ""Ann""",Pro,ann,"pw,with ""quotes""",active\n'
        '"bob@acme.io","Bob",enterprise,bob,pw-bob,\n'
    )
    path = write_csv(tmp_path / "c.csv", text, bom=True, crlf=True)
    out, _err = run("import_customers", str(path))
    assert "Created 2, updated 0, unchanged 0." in out
    assert Customer.objects.get(email="ann@acme.io").name == 'Acme, Inc. "Ann"'
    assert apache_verifies(htpasswd_dir / "pro.htpasswd", "ann", 'pw,with "quotes"')
    assert apache_verifies(htpasswd_dir / "enterprise.htpasswd", "bob", "pw-bob")


def test_reimport_changes_nothing_and_leaves_files_untouched(tiers, htpasswd_dir, tmp_path):
    text = (
        "email,name,tier,status,payment_status,username,password,password_hash,stripe_customer_id\n"
        "ann@acme.io,Ann,pro,active,current,ann,pw-ann,,cus_A\n"
        "bob@acme.io,Bob,enterprise,suspended,past_due,,,,\n"
        f"cy@acme.io,Cy,pro,,,cy,,{htpasswd_bcrypt('pw-cy')},\n"
    )
    path = write_csv(tmp_path / "c.csv", text)
    out, _ = run("import_customers", str(path), "--credentials-out", str(tmp_path / "s1.csv"))
    assert "Created 3, updated 0, unchanged 0." in out
    hashes = dict(Credential.objects.values_list("username", "password_hash"))
    before, events = file_state(htpasswd_dir), AuditEvent.objects.count()

    out, _ = run("import_customers", str(path), "--credentials-out", str(tmp_path / "s2.csv"))
    assert "Created 0, updated 0, unchanged 3." in out
    assert "Tier files rewritten: none." in out
    assert file_state(htpasswd_dir) == before  # same inode, mtime and bytes
    assert dict(Credential.objects.values_list("username", "password_hash")) == hashes  # ann's not re-hashed
    assert AuditEvent.objects.count() == events
    assert not (tmp_path / "s2.csv").exists()  # nothing generated, nothing written


def htpasswd_bcrypt(password: str) -> str:
    from customers import passwords

    return passwords.hash_secret(password, 4)


def test_changed_rows_are_updated(tiers, htpasswd_dir, tmp_path):
    run("import_customers", str(write_csv(tmp_path / "a.csv", GOOD + "bob@acme.io,Bob,pro,bob,pw-bob\n")))
    text = (
        "email,name,tier,username,password,status\n"
        "ann@acme.io,Ann B,enterprise,ann,pw-new,\n"
        "bob@acme.io,Bob,pro,bob,pw-bob,suspended\n"
    )
    out, _ = run("import_customers", str(write_csv(tmp_path / "b.csv", text)))
    assert "Created 0, updated 2, unchanged 0." in out
    assert file_users(htpasswd_dir, "pro") == []
    assert apache_verifies(htpasswd_dir / "enterprise.htpasswd", "ann", "pw-new")
    ann = Customer.objects.get(email="ann@acme.io")
    assert (ann.name, ann.tier.slug) == ("Ann B", "enterprise")
    bob = Customer.objects.get(email="bob@acme.io")
    assert (bob.status, bob.suspension_reason) == ("suspended", "staff")
    actions = Counter(AuditEvent.objects.filter(reason__startswith="b.csv").values_list("action", flat=True))
    assert actions == {"tier_changed": 1, "credential_rotated": 1, "suspended": 1}


def test_dry_run_reports_and_changes_nothing(tiers, htpasswd_dir, tmp_path):
    run("import_customers", str(write_csv(tmp_path / "a.csv", GOOD + "bob@acme.io,Bob,pro,bob,pw-bob\n")))
    before = file_state(htpasswd_dir)
    rows = dict(Customer.objects.values_list("email", "name"))
    text = GOOD + "bob@acme.io,Robert,pro,bob,pw-bob\ncy@acme.io,Cy,enterprise,cy,pw-cy\n"
    out, _ = run("import_customers", str(write_csv(tmp_path / "b.csv", text)), "--dry-run")
    assert "Dry run: nothing changed. Would create 1, update 1, leave 1 unchanged." in out
    assert "Tier files would be rewritten: enterprise." in out  # a new name changes no file
    assert dict(Customer.objects.values_list("email", "name")) == rows
    assert file_state(htpasswd_dir) == before


def test_generated_secrets_go_only_to_a_0600_file(tiers, htpasswd_dir, tmp_path):
    secrets_path = tmp_path / "secrets.csv"
    text = "email,name,tier\nann@acme.io,Ann,pro\nann@other.io,Ann Other,pro\n"
    out, err = run("import_customers", str(write_csv(tmp_path / "c.csv", text)), "--credentials-out", str(secrets_path))
    assert stat.S_IMODE(secrets_path.stat().st_mode) == 0o600
    with secrets_path.open(newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["email", "username", "password"]
    assert [(r[0], r[1]) for r in rows[1:]] == [("ann@acme.io", "ann"), ("ann@other.io", "ann-2")]
    for _email, username, secret in rows[1:]:
        assert len(secret) >= 22  # 128+ bits, URL-safe base64
        assert secret not in out and secret not in err
        assert apache_verifies(htpasswd_dir / "pro.htpasswd", username, secret)


def test_generated_secret_without_credentials_out_is_an_error(tiers, tmp_path):
    text = "email,name,tier,password\nann@acme.io,Ann,pro,pw\nbob@acme.io,Bob,pro,\n"
    _error, stderr = run_failing("import_customers", str(write_csv(tmp_path / "c.csv", text)))
    assert "line 3: needs a generated secret: pass --credentials-out PATH" in stderr
    assert Customer.objects.count() == 0


def test_existing_credentials_file_is_never_overwritten(tiers, tmp_path):
    secrets_path = tmp_path / "secrets.csv"
    secrets_path.write_text("earlier secrets\n")
    text = "email,name,tier\nann@acme.io,Ann,pro\n"
    error, _ = run_failing(
        "import_customers", str(write_csv(tmp_path / "c.csv", text)), "--credentials-out", str(secrets_path)
    )
    assert "already exists" in error
    assert secrets_path.read_text() == "earlier secrets\n"
    assert Customer.objects.count() == 0


def test_each_tier_file_is_written_once(tiers, htpasswd_dir, tmp_path, monkeypatch):
    writes = Counter()
    real = htpasswd.write_atomic

    def counting(path, *args, **kwargs):
        writes[path.name] += 1
        return real(path, *args, **kwargs)

    monkeypatch.setattr(htpasswd, "write_atomic", counting)
    lines = [f"u{i}@acme.io,U{i},{'pro' if i % 2 else 'enterprise'},u{i},pw{i}" for i in range(60)]
    run(
        "import_customers", str(write_csv(tmp_path / "c.csv", "email,name,tier,username,password\n" + "\n".join(lines)))
    )
    assert writes == {"pro.htpasswd": 1, "enterprise.htpasswd": 1}
    assert len(file_users(htpasswd_dir, "pro")) == 30


def test_query_count_does_not_grow_per_row(tiers, tmp_path):
    def queries_for(n: int, tag: str) -> int:
        lines = [f"{tag}{i}@acme.io,U{i},pro,{tag}{i},pw{i}" for i in range(n)]
        path = write_csv(tmp_path / f"{tag}.csv", "email,name,tier,username,password\n" + "\n".join(lines))
        with CaptureQueriesContext(connection) as ctx:
            run("import_customers", str(path))
        return len(ctx.captured_queries)

    small, large = queries_for(10, "s"), queries_for(310, "l")
    # Only bulk batches grow (SQLite caps parameters per statement): far
    # fewer than one query per 20 rows.
    assert large - small < 300 / 20, (small, large)


def test_audit_events_name_the_command_and_line(tiers, tmp_path):
    run("import_customers", str(write_csv(tmp_path / "a.csv", GOOD)))
    run(
        "import_customers",
        str(write_csv(tmp_path / "b.csv", "email,name,tier,username,password\nann@acme.io,Ann,pro,ann-ci,pw\n")),
    )
    events = list(
        AuditEvent.objects.order_by("id").values_list("actor_kind", "actor_label", "action", "reason", "changes")
    )
    assert events == [
        # One event for a customer created with its credential.
        (
            "command",
            importing.COMMAND_CUSTOMERS,
            "created",
            "a.csv line 2",
            {
                "status": [None, "active"],
                "payment_status": [None, "current"],
                "suspension_reason": [None, ""],
                "tier": [None, "pro"],
                "username": [None, "ann"],
            },
        ),
        ("command", importing.COMMAND_CUSTOMERS, "credential_issued", "b.csv line 2", {"username": [None, "ann-ci"]}),
    ]


def test_non_bcrypt_hash_is_accepted_with_a_warning(tiers, htpasswd_dir, tmp_path):
    apr1 = "$apr1$Jc5ejRXN$CKJxuVzNlB1e9FYLxjo/J."
    text = f"email,name,tier,username,password_hash\nann@acme.io,Ann,pro,ann,{apr1}\n"
    _out, err = run("import_customers", str(write_csv(tmp_path / "c.csv", text)))
    assert "line 2: warning: apr1-md5 hash" in err
    assert f"ann:{apr1}" in (htpasswd_dir / "pro.htpasswd").read_text()


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_shown_only_on_a_terminal(tiers, tmp_path):
    lines = [f"u{i}@acme.io,U{i},pro,u{i},pw{i}" for i in range(600)]
    path = write_csv(tmp_path / "c.csv", "email,name,tier,username,password\n" + "\n".join(lines) + "\n")
    terminal = _Terminal()
    call_command("import_customers", str(path), stdout=io.StringIO(), stderr=terminal)
    assert "\rhashing: 600/600 (100%)" in terminal.getvalue()
    assert Customer.objects.count() == 600
    piped = io.StringIO()
    call_command("import_customers", str(path), stdout=io.StringIO(), stderr=piped)  # a re-run: checks passwords
    assert piped.getvalue() == ""


def test_failed_commit_removes_the_secrets_file_and_changes_nothing(tiers, htpasswd_dir, tmp_path, monkeypatch):
    before = file_state(htpasswd_dir)

    def fail(*args, **kwargs):
        raise RuntimeError("simulated failure after the secrets file was written")

    monkeypatch.setattr(sync, "schedule_rebuild", fail)
    secrets_path = tmp_path / "secrets.csv"
    path = write_csv(tmp_path / "c.csv", "email,name,tier\nann@acme.io,Ann,pro\n")
    with pytest.raises(RuntimeError):
        call_command("import_customers", str(path), "--credentials-out", str(secrets_path), stdout=io.StringIO())
    assert not secrets_path.exists()
    nothing_changed(htpasswd_dir, before)


def test_a_conflict_arising_after_the_check_fails_the_import(tiers, tmp_path):
    path = write_csv(tmp_path / "c.csv", GOOD + "bob@acme.io,Bob,pro,bob,pw-bob\n")
    prepared, _warnings = importing.prepare_customer_import(path.read_bytes(), source="c.csv", can_generate=False)
    # Meanwhile, staff give "bob" to someone else.
    other = services.create_customer(name="Other", email="other@acme.io", tier=tiers["enterprise"], actor=COMMAND)
    services.issue_credential(other, actor=COMMAND, username="bob", password="x")
    with pytest.raises(importing.ImportFailed) as excinfo:
        services.apply_customer_import(prepared, actor=COMMAND)
    assert [str(p) for p in excinfo.value.problems] == [
        "line 3: the username 'bob' belongs to another customer (other@acme.io, tier enterprise)"
    ]
    assert not Customer.objects.filter(email="ann@acme.io").exists()


def test_a_tier_file_that_cannot_be_written_fails_the_command_loudly(tiers, htpasswd_dir, tmp_path, monkeypatch):
    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(htpasswd, "write_atomic", disk_full)
    error, _ = run_failing("import_customers", str(write_csv(tmp_path / "c.csv", GOOD)))
    assert "The import is saved, but 1 tier file(s) could not be written" in error
    assert "No space left on device" in error and "sync_htpasswd" in error
    assert Customer.objects.filter(email="ann@acme.io").exists()  # the database is the truth
    monkeypatch.undo()
    run("sync_htpasswd")
    assert file_users(htpasswd_dir, "pro") == ["ann"]


def test_stripe_id_of_another_customer_is_refused(tiers, tmp_path):
    run(
        "import_customers",
        str(
            write_csv(tmp_path / "a.csv", "email,name,tier,password,stripe_customer_id\nann@acme.io,Ann,pro,pw,cus_1\n")
        ),
    )
    path = write_csv(tmp_path / "b.csv", "email,name,tier,password,stripe_customer_id\nbob@acme.io,Bob,pro,pw,cus_1\n")
    _error, stderr = run_failing("import_customers", str(path))
    assert "line 2: the stripe_customer_id 'cus_1' belongs to another customer (ann@acme.io)" in stderr
    assert not Customer.objects.filter(email="bob@acme.io").exists()


def test_payment_status_past_due_starts_the_grace_period(tiers, tmp_path):
    text = "email,name,tier,password,payment_status\nann@acme.io,Ann,pro,pw,past_due\nbob@acme.io,Bob,pro,pw,\n"
    run("import_customers", str(write_csv(tmp_path / "a.csv", text)))
    assert Customer.objects.get(email="ann@acme.io").past_due_since is not None
    run("import_customers", str(write_csv(tmp_path / "b.csv", text.replace("past_due", "current"))))
    ann = Customer.objects.get(email="ann@acme.io")
    assert (ann.payment_status, ann.past_due_since) == ("current", None)
    assert Customer.objects.get(email="bob@acme.io").payment_status == "current"


def test_dry_run_with_an_existing_credentials_file_still_reports(tiers, tmp_path):
    secrets_path = tmp_path / "secrets.csv"
    secrets_path.write_text("earlier secrets\n")
    text = "email,name,tier\nann@acme.io,Ann,pro\n"
    out, _ = run(
        "import_customers", str(write_csv(tmp_path / "c.csv", text)), "--credentials-out", str(secrets_path), "--dry-run"
    )
    assert "Would create 1" in out
    assert secrets_path.read_text() == "earlier secrets\n"
    assert Customer.objects.count() == 0
