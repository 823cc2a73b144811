"""suspend_lapsed suspends exactly the customers past the grace period,
records why, writes each tier file once, and changes nothing when run again."""
from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from customers import htpasswd, services
from customers.models import AuditEvent, Customer

from .conftest import COMMAND, apache_verifies, file_users

pytestmark = pytest.mark.django_db(transaction=True)


def add(tiers, name: str, tier: str = "pro", past_due_days: float | None = None) -> Customer:
    customer = services.create_customer(name=name, email=f"{name}@example.com", tier=tiers[tier], actor=COMMAND)
    services.issue_credential(customer, actor=COMMAND, username=name, password=f"pw-{name}")
    if past_due_days is not None:
        since = timezone.now() - timedelta(days=past_due_days)
        customer = services.record_payment_failed(customer, actor=COMMAND, since=since)
    return customer


def run(*args: str) -> str:
    out = StringIO()
    call_command("suspend_lapsed", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


@pytest.fixture
def population(tiers) -> dict[str, Customer]:
    people = {
        "lapsed": add(tiers, "lapsed", past_due_days=8),
        "lapsed-ent": add(tiers, "lapsed-ent", tier="enterprise", past_due_days=30),
        "in-grace": add(tiers, "in-grace", past_due_days=6.9),
        "current": add(tiers, "current"),
        "staff-held": add(tiers, "staff-held", past_due_days=10),
        "revoked": add(tiers, "revoked", past_due_days=10),
        "unpaid": add(tiers, "unpaid"),
    }
    services.suspend(people["staff-held"], actor=COMMAND)
    services.revoke(people["revoked"], actor=COMMAND)
    services.set_payment_status(people["unpaid"], "unpaid", actor=COMMAND)
    return people


def statuses() -> dict[str, tuple[str, str]]:
    return {c.name: (c.status, c.suspension_reason) for c in Customer.objects.all()}


def test_suspends_exactly_those_past_the_grace_period(population, htpasswd_dir, settings):
    settings.GRACE_PERIOD_DAYS = 7
    out = run()
    assert statuses() == {
        "lapsed": ("suspended", "nonpayment"),
        "lapsed-ent": ("suspended", "nonpayment"),
        "in-grace": ("active", ""),
        "current": ("active", ""),
        "staff-held": ("suspended", "staff"),  # keeps the staff's reason, so a payment will not lift it
        "revoked": ("revoked", ""),
        "unpaid": ("active", ""),
    }
    assert file_users(htpasswd_dir, "pro") == ["current", "in-grace", "unpaid"]
    assert file_users(htpasswd_dir, "enterprise") == []
    assert apache_verifies(htpasswd_dir / "pro.htpasswd", "in-grace", "pw-in-grace")
    assert "2 customer(s) suspended" in out
    assert "lapsed@example.com" in out and "in-grace" not in out


def test_the_reason_is_recorded_in_the_audit_trail(population):
    run()
    audit = AuditEvent.objects.get(customer=population["lapsed"], action="suspended")
    assert (audit.actor_kind, audit.actor_label) == ("command", "suspend_lapsed")
    assert "past due for more than 7 days" in audit.reason
    assert audit.changes["suspension_reason"] == ["", "nonpayment"]


def test_is_idempotent(population, htpasswd_dir, monkeypatch):
    run()
    files = {p.name: p.read_bytes() for p in htpasswd_dir.glob("*.htpasswd")}
    audits, before = AuditEvent.objects.count(), statuses()
    writes = []
    real = htpasswd.write_atomic
    monkeypatch.setattr(htpasswd, "write_atomic", lambda path, *a, **k: writes.append(path.name) or real(path, *a, **k))

    out = run()
    assert "0 customer(s) suspended" in out
    assert statuses() == before
    assert AuditEvent.objects.count() == audits
    assert writes == []
    assert {p.name: p.read_bytes() for p in htpasswd_dir.glob("*.htpasswd")} == files


def test_writes_each_tier_file_once_however_many_lapse(tiers, monkeypatch, htpasswd_dir):
    for n in range(12):
        add(tiers, f"user{n}", tier="pro" if n % 2 else "enterprise", past_due_days=9)
    writes = []
    real = htpasswd.write_atomic
    monkeypatch.setattr(htpasswd, "write_atomic", lambda path, *a, **k: writes.append(path.name) or real(path, *a, **k))
    assert "12 customer(s) suspended" in run()
    assert sorted(writes) == ["enterprise.htpasswd", "pro.htpasswd"]
    assert file_users(htpasswd_dir, "pro") == [] and file_users(htpasswd_dir, "enterprise") == []


def test_grace_period_follows_the_setting_and_the_option(population, settings):
    settings.GRACE_PERIOD_DAYS = 20
    assert "1 customer(s) suspended" in run()  # only the 30-day one
    assert statuses()["lapsed"] == ("active", "")
    assert "1 customer(s) suspended" in run("--grace-days", "7")
    assert statuses()["lapsed"] == ("suspended", "nonpayment")


def test_dry_run_changes_nothing(population, htpasswd_dir):
    files = {p.name: p.read_bytes() for p in htpasswd_dir.glob("*.htpasswd")}
    before = statuses()
    out = run("--dry-run")
    assert "would suspend lapsed <lapsed@example.com>" in out
    assert "2 customer(s) past the 7-day grace period" in out
    assert statuses() == before
    assert {p.name: p.read_bytes() for p in htpasswd_dir.glob("*.htpasswd")} == files


def test_negative_grace_is_an_operator_error(population):
    with pytest.raises(CommandError, match="--grace-days"):
        run("--grace-days", "-1")


def test_payment_after_suspension_restores_access(population, htpasswd_dir):
    run()
    services.record_payment(population["lapsed"], actor=COMMAND)
    services.record_payment(population["staff-held"], actor=COMMAND)
    assert statuses()["lapsed"] == ("active", "")
    assert statuses()["staff-held"] == ("suspended", "staff")
    assert apache_verifies(htpasswd_dir / "pro.htpasswd", "lapsed", "pw-lapsed")
    assert "staff-held" not in file_users(htpasswd_dir, "pro")


def test_a_failed_file_write_fails_the_command(population, monkeypatch):
    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(htpasswd, "write_atomic", disk_full)
    with pytest.raises(CommandError, match="sync_htpasswd"):
        run()
    # The suspension itself is committed: the database is the truth.
    assert statuses()["lapsed"] == ("suspended", "nonpayment")
