"""How long the staff pages take with many customers.

Builds a throwaway SQLite database (or uses DATABASE_URL) with N customers
(one credential each, a fifth of them past due), writes the tier files, then
times the admin index (the dashboard, which compares every tier file with
the database), the lapsed filter and one customer's page (which reads its
tier file). Prints the median of a few runs of each.

    .venv/bin/python benchmarks/bench_dashboard.py [N]

BENCH_DATABASE_URL may name an empty PostgreSQL database to use instead.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
WORK = Path(tempfile.mkdtemp(prefix="bench-dashboard-"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
# Never the operator's DATABASE_URL: this script fills the database it gets.
os.environ["DATABASE_URL"] = os.environ.get("BENCH_DATABASE_URL") or f"sqlite:///{WORK / 'bench.sqlite3'}"
os.environ["HTPASSWD_DIR"] = str(WORK / "htpasswd")

import django  # noqa: E402

django.setup()

from django.contrib.auth.models import User  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import setup_test_environment  # noqa: E402
from django.utils import timezone  # noqa: E402

from customers import passwords, sync  # noqa: E402
from customers.models import Credential, Customer, Tier  # noqa: E402

RUNS = 5


def median_ms(fn) -> float:
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def populate(n: int) -> None:
    tiers = [
        Tier.objects.create(slug=slug, name=slug.title(), position=i) for i, slug in enumerate(["basic", "pro", "ent"])
    ]
    now = timezone.now()
    customers = [
        Customer(
            name=f"Customer {i}",
            email=f"c{i}@example.com",
            tier=tiers[i % 3],
            payment_status="past_due" if i % 5 == 0 else "current",
            past_due_since=now - timedelta(days=i % 15) if i % 5 == 0 else None,
        )
        for i in range(n)
    ]
    Customer.objects.bulk_create(customers, batch_size=2000)
    password_hash = passwords.hash_secret("benchmark-secret", 4)
    Credential.objects.bulk_create(
        [
            Credential(customer=c, username=f"user{i}", password_hash=password_hash)
            for i, c in enumerate(Customer.objects.all())
        ],
        batch_size=2000,
    )
    sync.sync_all()


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    setup_test_environment()
    call_command("migrate", verbosity=0)
    started = time.perf_counter()
    populate(n)
    print(
        f"{n} customers, 3 tiers, database {os.environ['DATABASE_URL'].split(':')[0]} "
        f"(populated in {time.perf_counter() - started:.1f} s)"
    )
    client = Client()
    client.force_login(User.objects.create_superuser("bench", "bench@example.com", "x"))
    customer = Customer.objects.filter(payment_status="past_due").last()
    pages = {
        "admin index with dashboard": "/admin/",
        "customers, lapsed filter": "/admin/customers/customer/?grace=lapsed",
        "one customer's page": f"/admin/customers/customer/{customer.pk}/change/",
        "/healthz": "/healthz",
    }
    for label, url in pages.items():
        assert client.get(url).status_code == 200, url
        print(f"{label:32s} {median_ms(lambda url=url: client.get(url)):8.1f} ms (median of {RUNS})")


if __name__ == "__main__":
    try:
        main()
    finally:
        shutil.rmtree(WORK, ignore_errors=True)
