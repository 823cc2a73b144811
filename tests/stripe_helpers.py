"""Stripe events signed exactly as Stripe signs them.

The signature is computed here with hmac/hashlib, not with the ``stripe``
package the app verifies with, so a mistake in how the app calls the
library cannot be mirrored by the tests: ``Stripe-Signature`` is
``t=<unix time>,v1=<hex>``, the hex being HMAC-SHA256 of ``"{t}.{raw body}"``
keyed with the whole ``whsec_…`` string.
"""
from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

SECRET = "whsec_test_3b1f0c9e2d7a4c58a1e6f2d9b0c4e7a1"
URL = "/webhooks/stripe/"

_ids = itertools.count(1)


def sign(body: bytes, secret: str = SECRET, timestamp: int | None = None) -> str:
    t = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


def event(event_type: str, obj: dict[str, Any], *, created: int | None = None, event_id: str | None = None) -> dict:
    """A Stripe event envelope (the fields Stripe sends that the app reads, and a few more)."""
    n = next(_ids)
    return {
        "id": event_id or f"evt_test_{n:06d}",
        "object": "event",
        "api_version": "2024-06-20",
        "created": int(time.time()) if created is None else created,
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": event_type,
        "data": {"object": obj},
    }


def invoice(customer_id: str, *, paid: bool) -> dict:
    return {
        "id": f"in_test_{next(_ids):06d}",
        "object": "invoice",
        "customer": customer_id,
        "status": "paid" if paid else "open",
        "amount_due": 4900,
        "amount_paid": 4900 if paid else 0,
        "currency": "usd",
        "attempt_count": 1,
    }


def subscription(customer_id: str, status: str, lookup_key: str | None = "pro") -> dict:
    return {
        "id": "sub_test_1",
        "object": "subscription",
        "customer": customer_id,
        "status": status,
        "items": {
            "object": "list",
            "data": [
                {
                    "id": "si_test_1",
                    "object": "subscription_item",
                    "price": {"id": "price_test_1", "object": "price", "lookup_key": lookup_key},
                    "quantity": 1,
                }
            ],
        },
    }


def body_of(payload: dict | bytes) -> bytes:
    return payload if isinstance(payload, bytes) else json.dumps(payload).encode()


def post(client, payload: dict | bytes, *, secret: str = SECRET, timestamp: int | None = None, signature: str | None = None):
    """POST through Django's test client, signed unless ``signature`` is given ("" sends none)."""
    body = body_of(payload)
    signature = sign(body, secret, timestamp) if signature is None else signature
    headers = {"Stripe-Signature": signature} if signature else {}
    return client.post(URL, data=body, content_type="application/json", headers=headers)


def post_http(base_url: str, payload: dict | bytes, *, secret: str = SECRET) -> tuple[int, dict]:
    """POST over a real socket (a live server), as Stripe would."""
    body = body_of(payload)
    request = urllib.request.Request(
        base_url + URL,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json; charset=utf-8", "Stripe-Signature": sign(body, secret)},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


@pytest.fixture
def stripe_secret(settings) -> str:
    settings.STRIPE_WEBHOOK_SECRET = SECRET
    return SECRET
