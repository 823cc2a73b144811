"""Staff users in the groups the migration creates, and lapsed customers.

Transactional tests flush the database after each test, which also removes
the groups created by the data migration, so ``staff_groups`` re-creates
them from the migration's own (frozen) definition.
"""

from __future__ import annotations

import importlib
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.utils import timezone

from customers import services
from customers.models import Customer

from .conftest import COMMAND

group_migration = importlib.import_module("customers.migrations.0003_issue6_staff_permissions")
PASSWORD = "correct horse battery staple"


@pytest.fixture
def staff_groups(db) -> dict[str, Group]:
    groups = {}
    for name, perms in group_migration.GROUPS.items():
        group, _ = Group.objects.get_or_create(name=name)
        codenames = [perm.split(".", 1)[1] for perm in perms]
        group.permissions.set(Permission.objects.filter(content_type__app_label="customers", codename__in=codenames))
        groups[name] = group
    return groups


def make_staff(username: str, group: Group | None = None, superuser: bool = False) -> User:
    if superuser:
        return User.objects.create_superuser(username, f"{username}@vendor.example", PASSWORD)
    user = User.objects.create_user(username, f"{username}@vendor.example", PASSWORD, is_staff=True)
    if group is not None:
        user.groups.add(group)
    return user


@pytest.fixture
def support_user(staff_groups) -> User:
    return make_staff("sam-support", staff_groups["support"])


@pytest.fixture
def billing_admin(staff_groups) -> User:
    return make_staff("bea-billing", staff_groups["billing admin"])


def add_customer(tiers, email: str, tier: str = "pro", password: str | None = None, past_due_days: float | None = None):
    """A customer with one credential (username = the email's local part)."""
    customer = services.create_customer(name=email.split("@")[0].title(), email=email, tier=tiers[tier], actor=COMMAND)
    services.issue_credential(customer, actor=COMMAND, password=password or f"pw-{email}")
    if past_due_days is not None:
        # Stripe would set this with invoice.payment_failed; backdate it.
        services.set_payment_status(customer, Customer.PaymentStatus.PAST_DUE, actor=COMMAND)
        Customer.objects.filter(pk=customer.pk).update(past_due_since=timezone.now() - timedelta(days=past_due_days))
    return Customer.objects.get(pk=customer.pk)


@pytest.fixture
def billing_cycle(tiers) -> dict[str, Customer]:
    """Two lapsed customers, one still in grace, one paying, one lapsed in another tier."""
    return {
        "lapsed1": add_customer(tiers, "ops@lapsed-one.io", past_due_days=20),
        "lapsed2": add_customer(tiers, "ci@lapsed-two.io", past_due_days=9),
        "grace": add_customer(tiers, "dev@in-grace.io", past_due_days=2),
        "paying": add_customer(tiers, "team@paying.io"),
        "lapsed_ent": add_customer(tiers, "it@lapsed-ent.io", tier="enterprise", past_due_days=30),
    }
