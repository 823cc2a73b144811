"""Who may do what in the admin.

The codenames are declared on the models (``Meta.permissions``) and the
groups are created by migration 0003_issue6_staff_permissions. The admin
checks these on every action and view, so hiding a button is never the
only protection.
"""
from __future__ import annotations

SUPPORT_GROUP = "support"
BILLING_ADMIN_GROUP = "billing admin"

SUSPEND_CUSTOMER = "customers.suspend_customer"
REVOKE_CUSTOMER = "customers.revoke_customer"
REACTIVATE_CUSTOMER = "customers.reactivate_customer"
ROTATE_CREDENTIAL = "customers.rotate_credential"  # also covers issuing a new credential
REVOKE_CREDENTIAL = "customers.revoke_credential"
