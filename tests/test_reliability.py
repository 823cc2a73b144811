"""A failed tier-file write is never silent, and never loses the change.

The database is the truth: a change commits even when its file cannot be
written. The failure is logged at error level, recorded (admin banner,
/healthz 503), retried by the next change and by ``sync_htpasswd``; the
proxy keeps reading the previous file, intact, and no temp file is left.

The faults are real where the kernel lets us (a read-only bind mount, a
full tmpfs; see tests/faults.py), injected otherwise. A crash between the
commit and the write is exercised with a real SIGKILL in
tests/test_crash.py.
"""
from __future__ import annotations

import logging
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from customers import htpasswd, services, sync
from customers.models import Customer, Tier, TierFileStatus

from . import faults
from .conftest import COMMAND, file_users

pytestmark = pytest.mark.django_db(transaction=True)

CHANGELIST = "/admin/customers/customer/"


def add(tier: Tier, email: str) -> Customer:
    customer = services.create_customer(name=email.split("@")[0], email=email, tier=tier, actor=COMMAND)
    services.issue_credential(customer, actor=COMMAND, password=f"pw-{email}")
    return customer


def make_tiers() -> dict[str, Tier]:
    return {
        "pro": Tier.objects.create(slug="pro", name="Pro", position=1),
        "enterprise": Tier.objects.create(slug="enterprise", name="Enterprise", position=2),
    }


def revoke_in_admin(client, customer: Customer):
    """What staff do: the revoke action, confirmed."""
    return client.post(
        CHANGELIST,
        {"action": "revoke_selected", "_selected_action": [customer.pk], "confirmed": "yes"},
    )


def assert_failure_is_visible(client, slug: str, error_fragment: str) -> None:
    health = client.get("/healthz")
    assert health.status_code == 503
    assert f"last write of {slug} failed" in health.json()["reason"]
    page = client.get("/admin/")
    assert page.status_code == 200
    banner = page.content.decode()
    assert 'id="tier-file-alert"' in banner
    assert f"The {slug} tier file could not be written" in banner
    assert error_fragment in banner


def assert_recovered(client, directory: Path) -> None:
    assert client.get("/healthz").status_code == 200
    assert 'id="tier-file-alert"' not in client.get("/admin/").content.decode()
    assert sync.recorded_failures() == []
    assert faults.temp_files(directory) == []


def error_records(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "customers.sync" and r.levelno >= logging.ERROR]


def test_unwritable_directory_keeps_the_change_shows_the_failure_and_recovers(
    admin_client, htpasswd_dir, caplog, monkeypatch
):
    tiers = make_tiers()
    add(tiers["pro"], "keep@acme.io")
    victim = add(tiers["pro"], "gone@acme.io")
    path = htpasswd_dir / "pro.htpasswd"
    before = path.read_bytes()
    assert file_users(htpasswd_dir, "pro") == ["gone", "keep"]

    with faults.read_only(htpasswd_dir, monkeypatch) as how:
        print(f"fault: {how}")
        response = revoke_in_admin(admin_client, victim)
        # Staff see the action succeed (it did: the database says revoked)...
        assert response.status_code == 302
        assert Customer.objects.get(pk=victim.pk).status == Customer.Status.REVOKED
        # ...and the proxy keeps the previous file, whole: nobody else loses access.
        assert path.read_bytes() == before
        assert faults.temp_files(htpasswd_dir) == []
        assert error_records(caplog), "the failed write must be logged at error level"
        assert_failure_is_visible(admin_client, "pro", "Read-only file system")
        # sync_htpasswd retries, and fails loudly while the fault lasts.
        with pytest.raises(CommandError):
            call_command("sync_htpasswd", stdout=StringIO(), stderr=StringIO())
        assert path.read_bytes() == before

    call_command("sync_htpasswd", stdout=StringIO())
    assert file_users(htpasswd_dir, "pro") == ["keep"]
    assert_recovered(admin_client, htpasswd_dir)


def test_full_filesystem_keeps_the_change_and_the_old_file_and_recovers(
    admin_client, htpasswd_dir, caplog, monkeypatch
):
    with faults.small_tmpfs(htpasswd_dir) as mounted:
        tiers = make_tiers()
        add(tiers["pro"], "keep@acme.io")
        victim = add(tiers["pro"], "gone@acme.io")
        path = htpasswd_dir / "pro.htpasswd"
        before = path.read_bytes()

        if mounted:
            print("fault: full tmpfs")
            filler = faults.fill(htpasswd_dir)
            fault = None
        else:
            filler = None
            fault = faults.injected_enospc(monkeypatch)
            print(f"fault: {fault.__enter__()}")

        response = revoke_in_admin(admin_client, victim)
        assert response.status_code == 302
        assert Customer.objects.get(pk=victim.pk).status == Customer.Status.REVOKED
        assert path.read_bytes() == before
        assert faults.temp_files(htpasswd_dir) == []
        assert error_records(caplog)
        assert_failure_is_visible(admin_client, "pro", "No space left on device")

        if filler is not None:
            filler.unlink()
        else:
            fault.__exit__(None, None, None)

        call_command("sync_htpasswd", stdout=StringIO())
        assert file_users(htpasswd_dir, "pro") == ["keep"]
        assert_recovered(admin_client, htpasswd_dir)


def test_the_next_change_retries_a_tier_whose_write_failed(admin_client, htpasswd_dir, monkeypatch):
    tiers = make_tiers()
    victim = add(tiers["pro"], "gone@acme.io")
    with faults.read_only(htpasswd_dir, monkeypatch):
        services.revoke(victim, actor=COMMAND)
    assert file_users(htpasswd_dir, "pro") == ["gone"]
    assert [f.tier_slug for f in sync.recorded_failures()] == ["pro"]

    # A change to another tier: the failed pro file is written with it.
    add(tiers["enterprise"], "new@acme.io")
    assert file_users(htpasswd_dir, "pro") == []
    assert file_users(htpasswd_dir, "enterprise") == ["new"]
    assert_recovered(admin_client, htpasswd_dir)


def test_lock_held_too_long_is_a_recorded_failure(admin_client, htpasswd_dir, settings):
    tiers = make_tiers()
    victim = add(tiers["pro"], "gone@acme.io")
    before = (htpasswd_dir / "pro.htpasswd").read_bytes()
    settings.HTPASSWD_LOCK_TIMEOUT = 0.3
    # flock conflicts between open file descriptions, even in one process:
    # this stands for another writer stuck while holding the lock.
    with htpasswd.directory_lock(htpasswd_dir):
        services.revoke(victim, actor=COMMAND)
        assert (htpasswd_dir / "pro.htpasswd").read_bytes() == before
        failure = TierFileStatus.objects.get(tier_slug="pro")
        assert "held for over 0.3s" in failure.last_error
        assert_failure_is_visible(admin_client, "pro", "held for over")
    call_command("sync_htpasswd", stdout=StringIO())
    assert file_users(htpasswd_dir, "pro") == []
    assert_recovered(admin_client, htpasswd_dir)


def test_a_database_error_while_writing_is_recorded_not_raised(htpasswd_dir, monkeypatch):
    """The write runs after the commit: an error there must not turn a
    change that happened into an error page."""
    tiers = make_tiers()
    victim = add(tiers["pro"], "gone@acme.io")

    def broken(slug, now=None):
        from django.db import OperationalError

        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(sync, "render_tier", broken)
    services.revoke(victim, actor=COMMAND)  # does not raise
    assert Customer.objects.get(pk=victim.pk).status == Customer.Status.REVOKED
    assert "server closed the connection" in TierFileStatus.objects.get(tier_slug="pro").last_error
    monkeypatch.undo()
    assert sync.sync_all().ok
    assert file_users(htpasswd_dir, "pro") == []


def test_temp_file_left_by_a_killed_writer_is_removed_by_the_next_write(htpasswd_dir):
    tiers = make_tiers()
    stale = htpasswd_dir / f"{htpasswd.TEMP_PREFIX}abc123"
    stale.write_text("half a fi")
    add(tiers["pro"], "keep@acme.io")
    assert faults.temp_files(htpasswd_dir) == []
    assert file_users(htpasswd_dir, "pro") == ["keep"]


def test_recorded_failure_of_a_deleted_tier_is_dropped_by_sync(htpasswd_dir):
    make_tiers()
    TierFileStatus.objects.create(tier_slug="gone-tier", last_error="OSError: boom")
    call_command("sync_htpasswd", stdout=StringIO())
    assert sync.recorded_failures() == []
    assert not (htpasswd_dir / "gone-tier.htpasswd").exists()
