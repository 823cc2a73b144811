"""Entitlement changes, through the services and through the plain ORM,
reach the tier files on commit, and only then."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from customers import htpasswd, services, sync
from customers.audit import Actor
from customers.models import AuditEvent, Credential, Customer

from .conftest import COMMAND, apache_verifies, file_users

pytestmark = pytest.mark.django_db(transaction=True)


def add(tiers, email="ops@acme.io", tier="pro", password="pw-acme", username=None):
    customer = services.create_customer(name=email.split("@")[0], email=email, tier=tiers[tier], actor=COMMAND)
    services.issue_credential(customer, actor=COMMAND, password=password, username=username)
    return customer


def snapshot(directory):
    return {p.name: p.read_bytes() for p in sorted(directory.glob("*.htpasswd"))}


def test_new_tier_gets_an_empty_file_at_once(tiers, htpasswd_dir):
    assert file_users(htpasswd_dir, "pro") == []
    assert file_users(htpasswd_dir, "enterprise") == []


def test_added_customer_verifies_with_apache_htpasswd(tiers, htpasswd_dir):
    add(tiers)
    assert file_users(htpasswd_dir, "pro") == ["ops"]
    assert apache_verifies(htpasswd_dir / "pro.htpasswd", "ops", "pw-acme")
    assert not apache_verifies(htpasswd_dir / "pro.htpasswd", "ops", "wrong")
    assert file_users(htpasswd_dir, "enterprise") == []


def test_generated_secret_is_returned_once_and_only_its_hash_stored(tiers, htpasswd_dir):
    customer = services.create_customer(name="A", email="a@x.io", tier=tiers["pro"], actor=COMMAND)
    issued = services.issue_credential(customer, actor=COMMAND)
    assert issued.secret and len(issued.secret) >= 22
    assert issued.secret not in issued.credential.password_hash
    assert issued.credential.password_hash.startswith("$2y$04$")
    assert apache_verifies(htpasswd_dir / "pro.htpasswd", issued.credential.username, issued.secret)


def test_suspend_reactivate_revoke_cycle(tiers, htpasswd_dir):
    customer = add(tiers)
    path = htpasswd_dir / "pro.htpasswd"
    services.suspend(customer, actor=COMMAND)
    assert file_users(htpasswd_dir, "pro") == []
    services.reactivate(customer, actor=COMMAND)
    assert apache_verifies(path, "ops", "pw-acme")
    services.revoke(customer, actor=COMMAND)
    assert file_users(htpasswd_dir, "pro") == []
    assert Customer.objects.get().status == "revoked"


def test_suspend_does_not_downgrade_a_revoked_customer(tiers):
    customer = services.revoke(add(tiers), actor=COMMAND)
    assert services.suspend(customer, actor=COMMAND).status == "revoked"


def test_move_between_tiers(tiers, htpasswd_dir):
    customer = add(tiers)
    services.change_tier(customer, tiers["enterprise"], actor=COMMAND)
    assert file_users(htpasswd_dir, "pro") == []
    assert apache_verifies(htpasswd_dir / "enterprise.htpasswd", "ops", "pw-acme")


def test_tier_move_writes_the_new_tier_first(tiers, monkeypatch):
    customer = add(tiers)
    order = []
    real = htpasswd.write_atomic
    monkeypatch.setattr(htpasswd, "write_atomic", lambda path, *a, **kw: order.append(path.stem) or real(path, *a, **kw))
    services.change_tier(customer, tiers["enterprise"], actor=COMMAND)
    assert order == ["enterprise", "pro"]


def test_plain_orm_changes_reach_the_files(tiers, htpasswd_dir):
    customer = add(tiers)
    customer = Customer.objects.get(pk=customer.pk)
    customer.status = Customer.Status.SUSPENDED
    customer.save()
    assert file_users(htpasswd_dir, "pro") == []
    customer.status = Customer.Status.ACTIVE
    customer.tier = tiers["enterprise"]
    customer.save()
    assert file_users(htpasswd_dir, "pro") == []
    assert file_users(htpasswd_dir, "enterprise") == ["ops"]
    customer.delete()
    assert file_users(htpasswd_dir, "enterprise") == []
    assert Credential.objects.count() == 0


def test_orm_save_of_an_instance_never_loaded_still_rebuilds_the_old_tier(tiers, htpasswd_dir):
    customer = add(tiers)
    stale = Customer(
        pk=customer.pk, name=customer.name, email=customer.email, tier=tiers["enterprise"], status="active"
    )
    stale.save()
    assert file_users(htpasswd_dir, "pro") == []
    assert file_users(htpasswd_dir, "enterprise") == ["ops"]


def test_saving_a_stale_instance_rebuilds_the_tier_it_really_leaves(tiers, htpasswd_dir):
    customer = add(tiers)
    stale = Customer.objects.get(pk=customer.pk)  # loaded while still in pro
    services.change_tier(customer, tiers["enterprise"], actor=COMMAND)  # "another process"
    stale.tier = tiers["pro"]
    stale.save()
    assert file_users(htpasswd_dir, "pro") == ["ops"]
    assert file_users(htpasswd_dir, "enterprise") == []


def test_moving_a_credential_to_another_customer_rebuilds_both_tiers(tiers, htpasswd_dir):
    add(tiers)
    other = services.create_customer(name="B", email="b@x.io", tier=tiers["enterprise"], actor=COMMAND)
    credential = Credential.objects.get(username="ops")
    credential.customer = other
    credential.save()
    assert file_users(htpasswd_dir, "pro") == []
    assert apache_verifies(htpasswd_dir / "enterprise.htpasswd", "ops", "pw-acme")


def test_deleting_a_credential_removes_only_it(tiers, htpasswd_dir):
    customer = add(tiers)
    services.issue_credential(customer, actor=COMMAND, username="ops-ci", password="x")
    Credential.objects.get(username="ops").delete()
    assert file_users(htpasswd_dir, "pro") == ["ops-ci"]


def test_revoked_and_expired_credentials_leave_the_file(tiers, htpasswd_dir):
    customer = add(tiers)
    services.issue_credential(customer, actor=COMMAND, username="ops-ci", password="x")
    services.issue_credential(
        customer, actor=COMMAND, username="ops-old", password="y", expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert file_users(htpasswd_dir, "pro") == ["ops", "ops-ci"]
    services.revoke_credential(Credential.objects.get(username="ops-ci"), actor=COMMAND)
    assert file_users(htpasswd_dir, "pro") == ["ops"]
    assert Customer.objects.get().status == "active"


def test_rotation_replaces_the_secret(tiers, htpasswd_dir):
    add(tiers)
    issued = services.rotate_credential(Credential.objects.get(), actor=COMMAND)
    path = htpasswd_dir / "pro.htpasswd"
    assert apache_verifies(path, "ops", issued.secret)
    assert not apache_verifies(path, "ops", "pw-acme")


def test_rolled_back_change_leaves_files_byte_identical(tiers, htpasswd_dir):
    customer = add(tiers)
    before = snapshot(htpasswd_dir)
    with pytest.raises(RuntimeError), transaction.atomic():
        services.revoke(customer, actor=COMMAND)
        services.issue_credential(customer, actor=COMMAND, username="new", password="x")
        services.create_customer(name="B", email="b@x.io", tier=tiers["enterprise"], actor=COMMAND)
        raise RuntimeError("roll back")
    assert snapshot(htpasswd_dir) == before
    assert Customer.objects.get().status == "active"


def test_savepoint_rollback_then_more_changes_still_rebuild(tiers, htpasswd_dir):
    with transaction.atomic():
        try:
            with transaction.atomic():
                add(tiers, email="gone@x.io")
                raise RuntimeError
        except RuntimeError:
            pass
        add(tiers, email="kept@x.io")
    assert file_users(htpasswd_dir, "pro") == ["kept"]


def test_many_changes_in_one_transaction_write_each_file_once(tiers, monkeypatch):
    writes = []
    real = htpasswd.write_atomic
    monkeypatch.setattr(htpasswd, "write_atomic", lambda path, *a, **kw: writes.append(path.stem) or real(path, *a, **kw))
    with transaction.atomic():
        for n in range(20):
            add(tiers, email=f"c{n}@x.io", tier="pro" if n % 2 else "enterprise")
    assert sorted(writes) == ["enterprise", "pro"]


@pytest.mark.parametrize("username", ["a:b", "a\nb", "a b", "#a", "a\r\nevil:$2y$05$x"])
def test_unsafe_username_is_refused_and_no_file_changes(tiers, htpasswd_dir, username):
    customer = add(tiers)
    before = snapshot(htpasswd_dir)
    with pytest.raises(ValidationError, match="Invalid username"):
        services.issue_credential(customer, actor=COMMAND, username=username, password="x")
    # The database refuses it too, for code that skips the services.
    with pytest.raises(IntegrityError), transaction.atomic():
        Credential.objects.create(customer=customer, username=username, password_hash="$2y$04$abc")
    assert snapshot(htpasswd_dir) == before
    assert Credential.objects.count() == 1


def test_case_insensitive_duplicate_username_is_refused_across_tiers(tiers, htpasswd_dir):
    add(tiers, username="Acme")
    other = services.create_customer(name="B", email="b@x.io", tier=tiers["enterprise"], actor=COMMAND)
    before = snapshot(htpasswd_dir)
    with pytest.raises(ValidationError, match="already in use"):
        services.issue_credential(other, actor=COMMAND, username="acme", password="x")
    with pytest.raises(IntegrityError), transaction.atomic():
        Credential.objects.create(customer=other, username="ACME", password_hash="$2y$04$abc")
    assert snapshot(htpasswd_dir) == before


@pytest.mark.parametrize("password_hash", ["abc:def", "abc def", "abc\n", "abcé", ""])
def test_unsafe_hash_is_refused_by_the_database(tiers, password_hash):
    customer = add(tiers)
    with pytest.raises(IntegrityError), transaction.atomic():
        Credential.objects.create(customer=customer, username="x2", password_hash=password_hash)


def test_trailing_newline_passes_neither_validation_nor_the_database(tiers, htpasswd_dir):
    # Python's $ matches before a final newline; the patterns end in \Z instead.
    customer = add(tiers)
    credential = Credential(customer=customer, username="bob\n", password_hash="$2y$04$abc")
    with pytest.raises(ValidationError):
        credential.full_clean()
    with pytest.raises(IntegrityError), transaction.atomic():
        credential.save()
    with pytest.raises(IntegrityError), transaction.atomic():
        type(tiers["pro"]).objects.create(slug="gold\n", name="Gold")
    assert file_users(htpasswd_dir, "pro") == ["ops"]


def test_password_over_72_bytes_is_refused(tiers):
    customer = services.create_customer(name="A", email="a@x.io", tier=tiers["pro"], actor=COMMAND)
    with pytest.raises(ValidationError, match="72 bytes"):
        services.issue_credential(customer, actor=COMMAND, password="x" * 73)
    assert Credential.objects.count() == 0


def test_duplicate_email_is_refused_ignoring_case(tiers):
    add(tiers)
    with pytest.raises(ValidationError, match="already exists"):
        services.create_customer(name="A", email="OPS@acme.io", tier=tiers["pro"], actor=COMMAND)
    with pytest.raises(IntegrityError), transaction.atomic():
        Customer.objects.create(name="A", email="OPS@ACME.IO", tier=tiers["pro"])


def test_invalid_status_is_refused_by_the_database(tiers):
    customer = add(tiers)
    with pytest.raises(IntegrityError), transaction.atomic():
        Customer.objects.filter(pk=customer.pk).update(status="paused")


def test_audit_records_who_did_what_from_what_to_what(tiers, django_user_model):
    staff = django_user_model.objects.create_user("alice", is_staff=True)
    customer = add(tiers)
    services.suspend(customer, actor=Actor.staff(staff))
    event = AuditEvent.objects.filter(action="suspended").get()
    assert (event.actor_kind, event.actor_label, event.actor_user) == ("staff", "alice", staff)
    assert event.changes["status"] == ["active", "suspended"]
    # A change made in the shell, with no service, is recorded as such.
    customer = Customer.objects.get()
    customer.tier = tiers["enterprise"]
    customer.save()
    event = AuditEvent.objects.filter(action="tier_changed").get()
    assert event.actor_kind == "shell"
    assert event.changes["tier"] == ["pro", "enterprise"]


def test_deleting_a_customer_is_audited_and_keeps_the_label(tiers):
    customer = add(tiers)
    customer.delete()
    event = AuditEvent.objects.get(action="deleted")
    assert event.customer is None and event.customer_label == "ops <ops@acme.io>"


def test_unchanged_save_does_not_rewrite(tiers, htpasswd_dir):
    customer = add(tiers)
    before = (htpasswd_dir / "pro.htpasswd").stat()
    customer = Customer.objects.get()
    customer.name = "Renamed"
    customer.save()
    after = (htpasswd_dir / "pro.htpasswd").stat()
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)


def test_failed_write_is_recorded_and_the_change_stays_committed(tiers, htpasswd_dir, monkeypatch):
    customer = add(tiers)

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(htpasswd, "write_atomic", disk_full)
    services.revoke(customer, actor=COMMAND)
    assert Customer.objects.get().status == "revoked"
    assert [f.tier_slug for f in sync.recorded_failures()] == ["pro"]
    monkeypatch.undo()
    assert sync.sync_all().ok
    assert sync.recorded_failures() == []
    assert file_users(htpasswd_dir, "pro") == []


def test_rotating_a_revoked_or_expired_credential_is_refused(tiers, htpasswd_dir):
    customer = add(tiers)
    credential = services.revoke_credential(Credential.objects.get(), actor=COMMAND)
    with pytest.raises(ValidationError, match="revoked or expired"):
        services.rotate_credential(credential, actor=COMMAND)
    assert Credential.objects.get().revoked_at is not None
    assert file_users(htpasswd_dir, "pro") == []
    expired = services.issue_credential(
        customer, actor=COMMAND, username="old", password="x", expires_at=timezone.now() - timedelta(seconds=1)
    ).credential
    with pytest.raises(ValidationError, match="revoked or expired"):
        services.rotate_credential(expired, actor=COMMAND)


def test_a_username_taken_between_check_and_insert_is_a_clear_error(tiers, monkeypatch):
    customer = add(tiers)
    monkeypatch.setattr(services, "validate_username", lambda username, **kwargs: username)  # lose the race
    with pytest.raises(ValidationError, match="already in use"):
        services.issue_credential(customer, actor=COMMAND, username="OPS", password="x")
    assert Credential.objects.count() == 1


def test_another_servers_failure_neither_shows_here_nor_is_cleared_here(tiers, settings, monkeypatch):
    customer = add(tiers)

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    settings.NODE_NAME = "server-b"
    monkeypatch.setattr(htpasswd, "write_atomic", disk_full)
    services.suspend(customer, actor=COMMAND)  # fails on server B
    monkeypatch.undo()
    assert [(f.host, f.tier_slug) for f in sync.recorded_failures()] == [("server-b", "pro")]

    settings.NODE_NAME = "server-a"
    assert sync.recorded_failures() == []  # A's /healthz and banner are not B's
    services.reactivate(customer, actor=COMMAND)  # A writes fine
    settings.NODE_NAME = "server-b"
    assert [f.tier_slug for f in sync.recorded_failures()] == ["pro"]  # still B's to retry


def test_renaming_a_tier_in_the_shell_empties_the_old_file(tiers, htpasswd_dir):
    add(tiers)
    tier = tiers["pro"]
    tier.slug = "professional"
    tier.save()
    assert file_users(htpasswd_dir, "professional") == ["ops"]
    assert file_users(htpasswd_dir, "pro") == []  # still there for Apache, but grants nothing
