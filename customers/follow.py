"""Keep this server's tier files current when another server changes access.

With several servers, each proxy host keeps its own copy of the tier files
(local disk: atomic rename and fresh reads are what make a revoke take effect
on the next request; NFS weakens both). The server that commits a change
rewrites its own files at once and then sends a PostgreSQL notification
naming the tiers. ``sync_htpasswd --follow`` on every other host listens for
it and rewrites the same tiers within milliseconds, instead of waiting for
the next run of the one-minute timer.

Notifications are best effort: one sent by a process that dies before it
can send it is lost. So the follower also rewrites every tier after each
quiet interval, which also drops credentials whose expiry has passed.
"""
from __future__ import annotations

import time
from collections.abc import Callable

from django.db import connection

from . import sync

def supported() -> bool:
    return connection.vendor == "postgresql"


def follow(*, idle_seconds: float = 30.0, keep_going: Callable[[], bool] = lambda: True,
           on_write: Callable[[sync.WriteReport], None] | None = None) -> None:
    """Rewrite tiers as notifications arrive; rewrite all after each quiet interval."""
    connection.ensure_connection()
    pg = connection.connection
    pg.execute(f"LISTEN {sync.NOTIFY_CHANNEL}")
    report = sync.write_tiers(sync.all_tier_slugs())  # catch up on what happened while we were not listening
    if on_write:
        on_write(report)
    last_full = time.monotonic()
    while keep_going():
        slugs: dict[str, None] = {}
        for note in pg.notifies(timeout=1.0, stop_after=1):
            slugs.update(dict.fromkeys(note.payload.split(",")))
        if slugs:
            # A burst of changes arrives as a burst of notifications: take
            # them all, then write each tier once.
            for note in pg.notifies(timeout=0.05):
                slugs.update(dict.fromkeys(note.payload.split(",")))
            report = sync.write_tiers(slugs)
        elif time.monotonic() - last_full >= idle_seconds:
            report = sync.write_tiers(sync.all_tier_slugs())
            last_full = time.monotonic()
        else:
            continue
        if on_write:
            on_write(report)
