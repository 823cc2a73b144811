"""Shared by the bulk commands: progress on a terminal (one self-rewriting
line on stderr, only when stderr is a TTY: never in logs, cron mail or
pipes), and the check that the tier files were written."""

from __future__ import annotations

import time

from django.core.management.base import CommandError

from customers import importing, sync

# Small files finish before a progress line would help.
MIN_TOTAL = 500


class TerminalProgress:
    def __init__(self, stream, interval: float = 0.2) -> None:
        self.stream = stream
        self.enabled = hasattr(stream, "isatty") and stream.isatty()
        self.interval = interval
        self._last = 0.0
        self._open = False

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled or total < MIN_TOTAL:
            return
        now = time.monotonic()
        if done < total and now - self._last < self.interval:
            return
        self._last = now
        line = f"\r{stage}: {done:,}/{total:,} ({100 * done // total}%)\033[K"
        self.stream.write(line, style_func=_plain, ending="")  # not in the error style
        self.stream.flush()
        self._open = True

    def finish(self) -> None:
        if self._open:
            self.stream.write("\r\033[K", style_func=_plain, ending="")
            self.stream.flush()
            self._open = False


def _plain(text: str) -> str:
    return text


def report_unwritten_tiers(changes: importing.Changes) -> None:
    """Fail loudly if a tier file this import changed could not be written.

    The import itself is committed (the database is the truth) and the
    failure is recorded for /healthz and the admin banner; the operator
    running the command must hear of it too, and know the repair.
    """
    affected = set(changes.gaining_tiers) | set(changes.losing_tiers)
    failed = [status for status in sync.recorded_failures() if status.tier_slug in affected]
    if failed:
        details = "; ".join(f"{sync.tier_path(s.tier_slug)}: {s.last_error}" for s in failed)
        raise CommandError(
            f"The import is saved, but {len(failed)} tier file(s) could not be written ({details}). "
            "Fix the cause, then run `manage.py sync_htpasswd`."
        )
