"""How long the Stripe webhook takes per event: applied (each one suspends
or reinstates a customer, so its tier file is rewritten), repeated (same
event id), and rejected (bad signature).

    .venv/bin/python benchmarks/bench_webhooks.py [--customers 1000] [--events 200]

In-process through Django's test client (no network), with signatures
computed as Stripe computes them. Uses a throw-away SQLite database (or
BENCH_DATABASE_URL, e.g. PostgreSQL) and a temporary HTPASSWD_DIR. Prints
medians and 95th percentiles in milliseconds.
"""
from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
WORKDIR = Path(tempfile.mkdtemp(prefix="bench-webhooks-"))
SECRET = "whsec_benchmark_0123456789abcdef"
os.environ.update(
    DJANGO_SETTINGS_MODULE="registry_admin.settings",
    SECRET_KEY="benchmark",
    DATABASE_URL=os.environ.get("BENCH_DATABASE_URL", f"sqlite:///{WORKDIR / 'db.sqlite3'}"),
    HTPASSWD_DIR=str(WORKDIR / "htpasswd"),
    STRIPE_WEBHOOK_SECRET=SECRET,
    ALLOWED_HOSTS="testserver",
    LOG_LEVEL="CRITICAL",  # rejected signatures log a warning each
)

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402

from customers import sync  # noqa: E402
from customers.models import AuditEvent, BillingEvent, Credential, Customer, Tier  # noqa: E402

HASH = "$2y$05$abcdefghijklmnopqrstuuO9UqKpO2Q3aF5Fn5l7uBBcFvXyXjzxu"
# Keeps the whole run bounded even on a slow, shared machine.
TIME_LIMIT_S = 120


def populate(size: int) -> None:
    BillingEvent.objects.all().delete()
    Credential.objects.all().delete()
    Customer.objects.all().delete()
    AuditEvent.objects.all().delete()
    tier = Tier.objects.get_or_create(slug="pro", defaults={"name": "Pro"})[0]
    customers = Customer.objects.bulk_create(
        Customer(name=f"c{n}", email=f"c{n}@example.com", tier=tier, stripe_customer_id=f"cus_{n:06d}")
        for n in range(size)
    )
    Credential.objects.bulk_create(
        Credential(customer=c, username=f"user{n:06d}", password_hash=HASH) for n, c in enumerate(customers)
    )
    sync.write_tiers(["pro"])


def signed(payload: dict, secret: str = SECRET) -> tuple[bytes, str]:
    body = json.dumps(payload).encode()
    t = int(time.time())
    return body, f"t={t},v1={hmac.new(secret.encode(), f'{t}.'.encode() + body, hashlib.sha256).hexdigest()}"


def events(count: int, customers: int) -> list[dict]:
    """Alternately suspend (unpaid) and reinstate (active) customers, so every
    event changes access and rewrites the tier file."""
    now = int(time.time())
    out = []
    for i in range(count):
        n = (i // 2) % customers
        status = "unpaid" if i % 2 == 0 else "active"
        subscription = {"id": f"sub_{n}", "object": "subscription", "customer": f"cus_{n:06d}", "status": status}
        out.append(
            {
                "id": f"evt_bench_{i:06d}",
                "object": "event",
                "type": "customer.subscription.updated",
                "created": now - count + i,
                "data": {"object": subscription},
            }
        )
    return out


def timed_posts(client: Client, bodies: list[tuple[bytes, str]], expect: int, deadline: float) -> list[float]:
    samples = []
    for body, signature in bodies:
        if time.monotonic() > deadline:
            break
        start = time.perf_counter()
        response = client.post("/webhooks/stripe/", body, content_type="application/json",
                               headers={"Stripe-Signature": signature})
        samples.append(time.perf_counter() - start)
        assert response.status_code == expect, (response.status_code, response.content[:200])
    return samples


def summary(label: str, samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    p95 = ms[min(len(ms) - 1, int(len(ms) * 0.95))]
    return f"{label:<28} {len(ms):>6} {statistics.median(ms):>9.2f}ms {p95:>9.2f}ms {len(ms) / sum(samples):>9.0f}/s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--events", type=int, default=200)
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    populate(args.customers)
    client = Client()
    deadline = time.monotonic() + TIME_LIMIT_S
    payloads = events(args.events, args.customers)
    bodies = [signed(p) for p in payloads]

    applied = timed_posts(client, bodies, 200, deadline)
    repeated = timed_posts(client, bodies[: len(applied)], 200, deadline)
    forged = timed_posts(client, [signed(p, "whsec_forged") for p in payloads], 400, deadline)
    assert not sync.find_drift(), "benchmark left drift"
    assert BillingEvent.objects.filter(result="processed").count() == len(applied)

    print(f"database: {connection.vendor}; {args.customers:,} customers in one tier; in-process client")
    print(f"{'request':<28} {'count':>6} {'median':>11} {'p95':>11} {'rate':>11}")
    print(summary("applied (file rewritten)", applied))
    print(summary("repeated delivery", repeated))
    print(summary("forged signature (400)", forged))


if __name__ == "__main__":
    main()
