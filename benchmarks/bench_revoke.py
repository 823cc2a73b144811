"""One revoke (save -> tier file rewritten) against merely writing that
file atomically, for 1k, 10k and 100k credentials in one tier.

    .venv/bin/python benchmarks/bench_revoke.py [--sizes 1000,10000,100000] [--repeat 15]

Uses a throw-away SQLite database (or BENCH_DATABASE_URL, e.g. PostgreSQL)
and a temporary HTPASSWD_DIR. Prints medians in milliseconds.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
WORKDIR = Path(tempfile.mkdtemp(prefix="bench-revoke-"))
os.environ.update(
    DJANGO_SETTINGS_MODULE="registry_admin.settings",
    SECRET_KEY="benchmark",
    DATABASE_URL=os.environ.get("BENCH_DATABASE_URL", f"sqlite:///{WORKDIR / 'db.sqlite3'}"),
    HTPASSWD_DIR=str(WORKDIR / "htpasswd"),
    LOG_LEVEL="WARNING",
)

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402

from customers import htpasswd, services, sync  # noqa: E402
from customers.audit import Actor  # noqa: E402
from customers.models import AuditEvent, Credential, Customer, Tier  # noqa: E402

# A well-formed cost-5 bcrypt hash; hashing 100k real ones would only slow the set-up.
HASH = "$2y$05$abcdefghijklmnopqrstuuO9UqKpO2Q3aF5Fn5l7uBBcFvXyXjzxu"
ACTOR = Actor.command("bench_revoke")


def populate(size: int) -> Customer:
    Credential.objects.all().delete()
    Customer.objects.all().delete()
    AuditEvent.objects.all().delete()
    tier = Tier.objects.get_or_create(slug="pro", defaults={"name": "Pro"})[0]
    customers = Customer.objects.bulk_create(
        Customer(name=f"c{n}", email=f"c{n}@example.com", tier=tier) for n in range(size)
    )
    Credential.objects.bulk_create(
        Credential(customer=c, username=f"user{n:06d}", password_hash=HASH) for n, c in enumerate(customers)
    )
    sync.write_tiers(["pro"])
    return Customer.objects.get(email=f"c{size - 1}@example.com")


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def measure(size: int, repeat: int) -> tuple[float, float, int]:
    customer = populate(size)
    path = sync.tier_path("pro")
    content = path.read_text()
    variants = [content, content.replace("user000000:", "user00000x:", 1)]

    bare = []
    for i in range(repeat):
        start = time.perf_counter()
        htpasswd.write_atomic(path, variants[i % 2], mode=0o640)
        bare.append(time.perf_counter() - start)
    sync.write_tiers(["pro"])

    revoke = []
    for i in range(repeat):
        change = services.revoke if i % 2 == 0 else services.reactivate
        start = time.perf_counter()
        change(customer, actor=ACTOR)
        revoke.append(time.perf_counter() - start)
    assert not sync.find_drift(), "benchmark left drift"

    # Where a revoke's time goes: reading the tier back, and rendering it.
    query, render = [], []
    for _ in range(repeat):
        start = time.perf_counter()
        entries = sync.entitled_entries("pro")
        query.append(time.perf_counter() - start)
        start = time.perf_counter()
        htpasswd.render(entries, header=sync.FILE_HEADER)
        render.append(time.perf_counter() - start)
    return median_ms(bare), median_ms(revoke), median_ms(query), median_ms(render), path.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    print(f"database: {connection.vendor}; median of {args.repeat} runs")
    print(f"{'credentials':>12} {'file size':>10} {'bare write':>11} {'revoke':>9} {'ratio':>6}"
          f" {'of which: query':>16} {'render':>8}")
    for size in (int(s) for s in args.sizes.split(",")):
        bare, revoke, query, render, file_size = measure(size, args.repeat)
        print(f"{size:>12,} {file_size / 1024:>8.0f}KB {bare:>9.1f}ms {revoke:>7.1f}ms {revoke / bare:>5.1f}x"
              f" {query:>14.1f}ms {render:>6.1f}ms")


if __name__ == "__main__":
    main()
