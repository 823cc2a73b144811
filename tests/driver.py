"""A separate process that changes access, for the multi-process tests.

Run as ``python -m tests.driver MODE ...`` with the production settings
and DATABASE_URL / HTPASSWD_DIR in the environment (tests/procs.py sets
them). Each mode goes through the services, like the admin does, and
prints one JSON line; any exception is printed and exits non-zero, so the
test sees exactly what a user would have seen.

Modes:
  seed N_PRO N_ENTERPRISE   tiers, customers with one credential each
                            (username = local part, password pw-<username>)
                            and a staff superuser "staff" / "staff-pw-1234"
  flip EMAIL[,EMAIL] ROUNDS revoke then reactivate, ROUNDS times each; then
                            revoke the first customer once more
  revoke EMAIL              revoke one customer
  status EMAIL              the customer's status
  healthz                   GET /healthz through Django
  crash EMAIL PHASE         revoke EMAIL, then stop and wait to be killed:
                            PHASE "after-commit" before any file work,
                            "mid-write" with the temp file written but not
                            yet renamed. Prints "COMMITTED" when waiting.
"""
from __future__ import annotations

import json
import os
import sys
import time
import traceback


def setup() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "registry_admin.settings")
    import django

    django.setup()


def seed(n_pro: int, n_enterprise: int) -> dict:
    from django.contrib.auth import get_user_model

    from customers import services
    from customers.audit import Actor
    from customers.models import Tier

    actor = Actor.command("tests.driver")
    tiers = {
        "pro": Tier.objects.create(slug="pro", name="Pro", position=1),
        "enterprise": Tier.objects.create(slug="enterprise", name="Enterprise", position=2),
    }
    emails = [f"p{i}@acme.io" for i in range(n_pro)] + [f"e{i}@acme.io" for i in range(n_enterprise)]
    ids = {}
    for email in emails:
        tier = tiers["pro" if email.startswith("p") else "enterprise"]
        username = email.split("@")[0]
        customer = services.create_customer(name=username, email=email, tier=tier, actor=actor)
        services.issue_credential(customer, actor=actor, username=username, password=f"pw-{username}")
        ids[username] = customer.pk
    get_user_model().objects.create_superuser("staff", "staff@example.com", "staff-pw-1234")
    return {"ids": ids}


def flip(emails: list[str], rounds: int) -> dict:
    from customers import services
    from customers.audit import Actor
    from customers.models import Customer

    actor = Actor.command(f"tests.driver:{os.getpid()}")
    done = 0
    for _ in range(rounds):
        for email in emails:
            customer = Customer.objects.get(email=email)
            services.revoke(customer, actor=actor)
            services.reactivate(customer, actor=actor)
            done += 2
    services.revoke(Customer.objects.get(email=emails[0]), actor=actor)
    return {"changes": done + 1}


def revoke(email: str) -> dict:
    from customers import services
    from customers.audit import Actor
    from customers.models import Customer

    return {"status": services.revoke(Customer.objects.get(email=email), actor=Actor.command("tests.driver")).status}


def status(email: str) -> dict:
    from customers.models import Customer

    return {"status": Customer.objects.get(email=email).status}


def healthz() -> dict:
    from django.test import Client

    response = Client().get("/healthz", HTTP_HOST="127.0.0.1")
    return {"status_code": response.status_code, "body": response.json()}


def crash(email: str, phase: str) -> None:
    from customers import htpasswd, services
    from customers.audit import Actor
    from customers.models import Customer

    def wait_to_be_killed(*args, **kwargs):
        print("COMMITTED", flush=True)
        time.sleep(300)
        raise SystemExit("not killed")

    if phase == "after-commit":
        htpasswd.write_atomic = wait_to_be_killed  # the on-commit write is the next thing to run
    elif phase == "mid-write":
        htpasswd.os.replace = wait_to_be_killed  # the temp file is written and fsynced by now
    else:
        raise SystemExit(f"unknown phase {phase}")
    services.revoke(Customer.objects.get(email=email), actor=Actor.command("tests.driver crash"))


def main(argv: list[str]) -> int:
    setup()
    mode, args = argv[0], argv[1:]
    try:
        if mode == "seed":
            result = seed(int(args[0]), int(args[1]))
        elif mode == "flip":
            result = flip(args[0].split(","), int(args[1]))
        elif mode == "revoke":
            result = revoke(args[0])
        elif mode == "status":
            result = status(args[0])
        elif mode == "healthz":
            result = healthz()
        elif mode == "crash":
            crash(args[0], args[1])
            return 3
        else:
            raise SystemExit(f"unknown mode {mode}")
    except Exception:  # noqa: BLE001 - report exactly what happened, to the test
        traceback.print_exc()
        return 1
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
