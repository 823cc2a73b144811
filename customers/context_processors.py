"""Template context for admin pages."""
from __future__ import annotations

from django.db import DatabaseError

from .models import TierFileStatus


def tier_file_alerts(request):
    """Failed tier-file writes, for the banner on every admin page.

    Only staff pages pay for it, and it is one indexed query: recorded
    failures, not a full drift check (that runs on the dashboard and /healthz).
    """
    if not request.path.startswith("/admin/") or not getattr(request, "user", None) or not request.user.is_staff:
        return {}
    try:
        return {"tier_file_failures": list(TierFileStatus.objects.on_this_server().exclude(last_error=""))}
    except DatabaseError:
        return {}
