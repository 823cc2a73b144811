"""Several processes change entitlements while another reads the files:
the reader never sees a missing, empty or partial file, and afterwards the
files equal the database. Runs on whichever database the suite runs on
(CI runs it on SQLite and on PostgreSQL)."""
from __future__ import annotations

import os
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command

from customers import services, sync
from customers.models import Customer

from .conftest import COMMAND, database_url

pytestmark = pytest.mark.django_db(transaction=True)
REPO = Path(__file__).resolve().parent.parent
WORKERS = 3
ROUNDS = 40


def test_concurrent_writers_never_expose_a_partial_file(tiers, htpasswd_dir, tmp_path):
    customers = []
    for n in range(12):
        customer = services.create_customer(
            name=f"C{n}", email=f"c{n}@x.io", tier=tiers["pro" if n % 2 else "enterprise"], actor=COMMAND
        )
        services.issue_credential(customer, actor=COMMAND, username=f"user{n:02d}", password=f"pw{n}")
        customers.append(customer.pk)

    env = {**os.environ, "DATABASE_URL": database_url(), "HTPASSWD_DIR": str(htpasswd_dir),
           "DJANGO_SETTINGS_MODULE": "tests.settings", "PYTHONPATH": str(REPO)}
    stop = tmp_path / "stop"
    reader = subprocess.Popen(
        [sys.executable, "tests/workers/reader.py", str(stop), *(str(htpasswd_dir / f"{s}.htpasswd") for s in tiers)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, text=True,
    )
    workers = [
        subprocess.Popen(
            [sys.executable, "tests/workers/churn.py", str(ROUNDS), *map(str, customers[i::WORKERS])],
            cwd=REPO, env=env, stderr=subprocess.PIPE, text=True,
        )
        for i in range(WORKERS)
    ]
    try:
        errors = [w.communicate(timeout=180)[1] for w in workers]
    finally:
        stop.write_text("")
        report = reader.communicate(timeout=60)[0]
    assert [w.returncode for w in workers] == [0] * WORKERS, errors
    assert not any("database is locked" in e for e in errors)
    reads, bad = (int(part.split("=")[1]) for part in report.splitlines()[0].split())
    assert reads > 100, report
    assert bad == 0, report

    out = StringIO()
    call_command("sync_htpasswd", "--check", stdout=out)  # raises CommandError on drift
    assert sync.find_drift() == []
    for slug in tiers:
        expected = sorted(
            Customer.objects.filter(tier__slug=slug, status="active").values_list("credentials__username", flat=True)
        )
        lines = (htpasswd_dir / f"{slug}.htpasswd").read_text().splitlines()
        assert [line.split(":")[0] for line in lines if not line.startswith("#")] == expected
