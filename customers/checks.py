"""System checks for misconfiguration an operator would otherwise meet as a
failed write at the worst moment."""
from __future__ import annotations

import grp
import os
from pathlib import Path

from django.conf import settings
from django.core import checks


@checks.register(checks.Tags.compatibility)
def check_htpasswd_settings(app_configs=None, **kwargs):
    errors = []
    group = settings.HTPASSWD_FILE_GROUP
    if group:
        try:
            grp.getgrnam(group)
        except KeyError:
            errors.append(
                checks.Error(
                    f"HTPASSWD_FILE_GROUP names the group {group!r}, which does not exist.",
                    hint="Create it, or set the group the proxy runs as (www-data on Debian).",
                    id="customers.E001",
                )
            )
    directory = Path(settings.HTPASSWD_DIR)
    existing = next((p for p in (directory, *directory.parents) if p.exists()), None)
    if existing is None or not os.access(existing, os.W_OK | os.X_OK):
        errors.append(
            checks.Warning(
                f"HTPASSWD_DIR {directory} cannot be written by this process.",
                hint="Tier files could not be updated; access changes would not reach the proxy.",
                id="customers.W001",
            )
        )
    if settings.HTPASSWD_BCRYPT_ROUNDS > 10:
        errors.append(
            checks.Warning(
                f"HTPASSWD_BCRYPT_ROUNDS is {settings.HTPASSWD_BCRYPT_ROUNDS}; the proxy verifies the hash "
                "on every request (cost 10 allows about 29 requests/s on 2 cores, cost 12 about 6).",
                hint="Generated secrets have 192 bits of randomness; cost 5 is safe for them.",
                id="customers.W002",
            )
        )
    return errors


@checks.register(checks.Tags.compatibility)
def check_stripe_settings(app_configs=None, **kwargs):
    secret = settings.STRIPE_WEBHOOK_SECRET
    if secret and not secret.startswith("whsec_"):
        # An API key (sk_…) pasted by mistake would make every event fail
        # its signature check, and Stripe would give up after three days.
        return [
            checks.Warning(
                "STRIPE_WEBHOOK_SECRET does not start with 'whsec_'; every webhook would be rejected.",
                hint="Use the endpoint's signing secret from the Stripe Dashboard, not an API key.",
                id="customers.W401",
            )
        ]
    return []
