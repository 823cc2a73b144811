"""HTTP endpoints other than the admin. Thin: the work is in sync/services."""
from __future__ import annotations

from django.db import DatabaseError
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from . import sync


@require_safe
@never_cache
def healthz(request):
    """200 when the database answers and every tier file matches it."""
    try:
        drifts = sync.find_drift()
        failures = sync.recorded_failures()
    except DatabaseError as exc:
        return JsonResponse({"status": "error", "reason": f"database: {exc}"}, status=503)
    if drifts or failures:
        problems = [str(d) for d in drifts]
        problems += [f"last write of {f.tier_slug} failed at {f.last_error_at:%Y-%m-%d %H:%M:%S}: {f.last_error}"
                     for f in failures]
        return JsonResponse({"status": "drift", "reason": "; ".join(problems), "problems": problems}, status=503)
    return JsonResponse({"status": "ok"})
