"""Toggle customers' access from a separate process, through the services.

Usage: churn.py ROUNDS CUSTOMER_ID [CUSTOMER_ID ...]
The database and HTPASSWD_DIR come from the environment, as in production.
Exits non-zero on any error (a "database is locked" included).
"""
from __future__ import annotations

import os
import random
import sys

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import django  # noqa: E402

django.setup()

from customers import services  # noqa: E402
from customers.audit import Actor  # noqa: E402
from customers.models import Customer, Tier  # noqa: E402


def main() -> None:
    rounds, ids = int(sys.argv[1]), [int(i) for i in sys.argv[2:]]
    actor = Actor.command(f"churn-{os.getpid()}")
    tiers = list(Tier.objects.all())
    rng = random.Random(os.getpid())
    for _ in range(rounds):
        customer = Customer.objects.get(pk=rng.choice(ids))
        move = rng.random()
        if move < 0.4:
            services.suspend(customer, actor=actor)
        elif move < 0.8:
            services.reactivate(customer, actor=actor)
        else:
            services.change_tier(customer, rng.choice(tiers), actor=actor)


if __name__ == "__main__":
    main()
