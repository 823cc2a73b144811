"""HTTP endpoints other than the admin. Thin: the work is in sync/services."""
from __future__ import annotations

import json
import logging

import stripe
from django.conf import settings
from django.db import DatabaseError
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST, require_safe

from . import billing, sync

logger = logging.getLogger(__name__)


@require_safe
@never_cache
def healthz(request):
    """200 when the database answers and every tier file matches it.

    Anyone who can reach it may call it, so the reason names tiers and
    counts, never usernames, paths or database errors; ``sync_htpasswd
    --check``, the admin and the logs give the detail.
    """
    try:
        drifts = sync.find_drift()
        failures = sync.recorded_failures()
    except DatabaseError:
        logger.exception("health check: the database did not answer")
        return JsonResponse({"status": "error", "reason": "database unavailable"}, status=503)
    if drifts or failures:
        problems = [drift.summary() for drift in drifts]
        problems += [f"last write of {f.tier_slug} failed at {f.last_error_at:%Y-%m-%d %H:%M:%S}" for f in failures]
        return JsonResponse({"status": "drift", "reason": "; ".join(problems), "problems": problems}, status=503)
    return JsonResponse({"status": "ok"})


@csrf_exempt  # Stripe signs the body instead; there is no session.
@require_POST
def stripe_webhook(request):
    """Verify a Stripe event and hand it to billing.

    Nothing is stored before the signature is verified against the raw body:
    an unsigned, forged or stale request (or one while no secret is set)
    leaves no trace but a log line.
    """
    secret = settings.STRIPE_WEBHOOK_SECRET
    if not secret:
        logger.error("Stripe webhook called, but STRIPE_WEBHOOK_SECRET is not set")
        return JsonResponse({"error": "the webhook is not configured (STRIPE_WEBHOOK_SECRET)"}, status=503)
    header = request.headers.get("Stripe-Signature")
    if not header:
        return JsonResponse({"error": "missing Stripe-Signature header"}, status=400)
    try:
        stripe.Webhook.construct_event(request.body, header, secret, tolerance=billing.SIGNATURE_TOLERANCE)
        data = billing.parse_event(json.loads(request.body))
    except stripe.SignatureVerificationError as exc:
        logger.warning("Stripe webhook: signature rejected: %s", exc)
        return JsonResponse({"error": "invalid signature"}, status=400)
    except (ValueError, TypeError, AttributeError) as exc:
        # ValueError covers bad UTF-8, bad JSON and billing.InvalidEvent; the
        # library raises the others on JSON that is not an object.
        return JsonResponse({"error": f"not a Stripe event: {exc}"}, status=400)
    try:
        outcome = billing.receive(data)
    except billing.InvalidEvent as exc:
        return JsonResponse({"error": f"not a Stripe event: {exc}"}, status=400)
    return JsonResponse(outcome.as_json(), status=outcome.http_status)
