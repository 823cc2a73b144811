"""sync_htpasswd and /healthz: drift is detected, reported and repaired."""
from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from customers import services
from customers.models import Credential

from .conftest import COMMAND, apache_verifies, file_users

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def customer(tiers):
    customer = services.create_customer(name="Acme", email="ops@acme.io", tier=tiers["pro"], actor=COMMAND)
    services.issue_credential(customer, actor=COMMAND, username="acme", password="pw-acme")
    return customer


def check():
    out = StringIO()
    try:
        call_command("sync_htpasswd", "--check", stdout=out)
    except CommandError as exc:
        return exc.returncode, out.getvalue()
    return 0, out.getvalue()


def test_check_passes_when_files_match(customer):
    assert check() == (0, "All tier files match the database.\n")


def test_check_detects_a_hand_edited_file_and_sync_repairs_it(customer, htpasswd_dir):
    path = htpasswd_dir / "pro.htpasswd"
    original = path.read_text()
    path.write_text(original + "intruder:$2y$05$abcdefghijklmnopqrstuuO9UqKpO2Q3aF5Fn5l7uBBcFvXyXjzxu\n")
    tampered = path.read_text()

    code, output = check()
    assert code == 1
    assert "unexpected intruder" in output
    assert path.read_text() == tampered  # --check changes nothing

    out = StringIO()
    call_command("sync_htpasswd", stdout=out)
    assert f"rewrote {path}" in out.getvalue()
    assert path.read_text() == original
    assert check()[0] == 0


def test_check_detects_a_missing_file_and_a_removed_user(customer, tiers, htpasswd_dir):
    (htpasswd_dir / "enterprise.htpasswd").unlink()
    (htpasswd_dir / "pro.htpasswd").write_text("")
    code, output = check()
    assert code == 1
    assert "enterprise.htpasswd: missing" in output
    assert "missing acme" in output
    call_command("sync_htpasswd", stdout=StringIO())
    assert file_users(htpasswd_dir, "enterprise") == []
    assert apache_verifies(htpasswd_dir / "pro.htpasswd", "acme", "pw-acme")


def test_sync_is_idempotent_and_leaves_unchanged_files_alone(customer, htpasswd_dir):
    before = (htpasswd_dir / "pro.htpasswd").stat()
    out = StringIO()
    call_command("sync_htpasswd", stdout=out)
    assert "0 rewritten, 2 already in sync" in out.getvalue()
    after = (htpasswd_dir / "pro.htpasswd").stat()
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)


def test_sync_drops_a_credential_once_it_expires(customer, htpasswd_dir, client):
    credential = Credential.objects.get()
    # Expiry passes with nobody touching anything: the file is now stale.
    Credential.objects.filter(pk=credential.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert file_users(htpasswd_dir, "pro") == ["acme"]
    assert check()[0] == 1
    assert client.get("/healthz").status_code == 503
    call_command("sync_htpasswd", stdout=StringIO())
    assert file_users(htpasswd_dir, "pro") == []
    assert client.get("/healthz").status_code == 200


def test_sync_fails_loudly_when_it_cannot_write(customer, settings, tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    settings.HTPASSWD_DIR = blocker / "htpasswd"
    err = StringIO()
    with pytest.raises(CommandError, match="could not be written"):
        call_command("sync_htpasswd", stdout=StringIO(), stderr=err)
    assert "could not write" in err.getvalue()


def test_healthz_ok_when_in_sync(customer, client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_healthz_503_with_the_reason_when_a_file_drifts(customer, client, htpasswd_dir):
    (htpasswd_dir / "pro.htpasswd").write_text("# emptied by hand\n")
    response = client.get("/healthz")
    assert response.status_code == 503
    assert "pro.htpasswd" in response.json()["reason"]
    assert "1 missing, 0 unexpected" in response.json()["reason"]
    assert "acme" not in response.json()["reason"]  # no usernames for anonymous callers


def test_healthz_503_while_a_failed_write_is_unrepaired(customer, client, htpasswd_dir, monkeypatch):
    from customers import htpasswd

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(htpasswd, "write_atomic", disk_full)
    services.suspend(customer, actor=COMMAND)  # committed; its file write fails
    assert file_users(htpasswd_dir, "pro") == ["acme"]  # the old file is intact
    response = client.get("/healthz")
    assert response.status_code == 503
    assert "last write of pro failed" in response.json()["reason"]

    monkeypatch.undo()
    call_command("sync_htpasswd", stdout=StringIO())  # repairs the file and clears the failure
    assert file_users(htpasswd_dir, "pro") == []
    assert client.get("/healthz").status_code == 200


def test_healthz_rejects_other_methods(client, tiers):
    assert client.post("/healthz").status_code == 405
