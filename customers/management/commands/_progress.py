"""Progress on a terminal for the bulk commands: one self-rewriting line on
stderr, only when stderr is a TTY (never in logs, cron mail or pipes)."""

from __future__ import annotations

import time

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
