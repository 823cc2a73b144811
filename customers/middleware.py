"""A guard in front of every view: refuse requests no view here can serve."""
from __future__ import annotations

from django.conf import settings
from django.http import HttpResponse, HttpResponseNotAllowed

# Every view here (the admin, /healthz, the webhook) works with these. The
# admin's views do not check the method themselves: a PUT or DELETE would be
# served as if it were a GET. Refuse the rest at the door, with 405 and an
# Allow header, so a wrong method is a client error, never a surprise.
ALLOWED_METHODS = ("GET", "HEAD", "POST", "OPTIONS")


def request_guard(get_response):
    # Nothing here takes uploads: admin forms and Stripe events are a few
    # kilobytes. Django refuses an oversized body only when a view reads it,
    # so a view that ignores the body (the admin index) would answer 200;
    # refuse by the declared length before any view runs, the same way
    # everywhere.
    max_body = settings.DATA_UPLOAD_MAX_MEMORY_SIZE

    def middleware(request):
        if request.method not in ALLOWED_METHODS:
            return HttpResponseNotAllowed(ALLOWED_METHODS)
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return HttpResponse("Bad Content-Length.\n", status=400, content_type="text/plain")
        if max_body is not None and length > max_body:
            return HttpResponse("Request body too large.\n", status=413, content_type="text/plain")
        return get_response(request)

    return middleware
