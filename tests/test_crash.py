"""kill -9 between the commit and the file write.

A process (a management command, a shell, a worker) commits a revoke and is
killed before it writes the tier file. The database is right and the file
is stale: the revoked customer could still pull. /healthz must report that
drift (503) until ``sync_htpasswd`` (a one-minute systemd timer in
production) or the next change repairs it. The test times the repair, for
the worst-case window in docs/production.md.
"""
from __future__ import annotations

import signal
import time

import pytest

from . import faults, procs

pytestmark = pytest.mark.system


def users(site: procs.Site, slug: str = "pro") -> list[str]:
    text = (site.htpasswd_dir / f"{slug}.htpasswd").read_text()
    return [line.split(":", 1)[0] for line in text.splitlines() if line and not line.startswith("#")]


def kill_after_commit(site: procs.Site, email: str, phase: str) -> None:
    process = site.start_driver("crash", email, phase)
    try:
        line = process.stdout.readline()  # blocks until the driver is paused after its commit
        assert line.strip() == "COMMITTED", process.stderr.read() if process.poll() is not None else line
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL


@pytest.mark.parametrize("phase", ["after-commit", "mid-write"])
def test_kill_9_between_commit_and_write_shows_drift_until_sync_htpasswd_repairs_it(tmp_path, phase):
    with procs.site(tmp_path) as site:
        site.driver("seed", "2", "0")
        before = (site.htpasswd_dir / "pro.htpasswd").read_bytes()
        assert users(site) == ["p0", "p1"]

        kill_after_commit(site, "p1@acme.io", phase)

        # The change is committed; the file is the old one, whole.
        assert site.driver("status", "p1@acme.io") == {"status": "revoked"}
        assert (site.htpasswd_dir / "pro.htpasswd").read_bytes() == before
        if phase == "mid-write":
            assert len(faults.temp_files(site.htpasswd_dir)) == 1  # what SIGKILL leaves behind

        # /healthz and sync_htpasswd --check see the drift and name the user.
        health = site.driver("healthz")
        assert health["status_code"] == 503
        assert "1 unexpected" in health["body"]["reason"]
        check = site.manage("sync_htpasswd", "--check")
        assert check.returncode == 1 and "unexpected p1" in check.stdout

        started = time.monotonic()
        repaired = site.manage("sync_htpasswd")
        took = time.monotonic() - started
        assert repaired.returncode == 0, repaired.stderr
        print(f"{procs.backend()} {phase}: sync_htpasswd repaired the drift in {took:.2f}s (process start included)")

        assert users(site) == ["p0"]
        assert faults.temp_files(site.htpasswd_dir) == []
        assert site.driver("healthz") == {"status_code": 200, "body": {"status": "ok"}}
        assert site.manage("sync_htpasswd", "--check").returncode == 0
