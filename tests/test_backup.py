"""The backup and restore commands in docs/production.md work on a live
database, and after a restore ``sync_htpasswd`` makes the files follow it.

The restore also shows the warning in the doc: access goes back to what it
was at the time of the backup.
"""
from __future__ import annotations

import subprocess
from urllib.parse import urlparse

import pytest

from . import procs
from .conftest import require_program

pytestmark = pytest.mark.system


def users(site: procs.Site) -> list[str]:
    text = (site.htpasswd_dir / "pro.htpasswd").read_text()
    return [line.split(":", 1)[0] for line in text.splitlines() if line and not line.startswith("#")]


def run(*args: str) -> None:
    result = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{args}: {result.stderr}"


def backup(site: procs.Site, target) -> None:
    url = urlparse(site.env["DATABASE_URL"])
    if url.scheme == "sqlite":
        # The online backup: consistent even with recent changes still in the WAL file.
        run(require_program("sqlite3"), url.path, f".backup '{target}'")
    else:
        run(require_program("pg_dump"), "--format=custom", f"--file={target}", site.env["DATABASE_URL"])


def restore(site: procs.Site, source) -> None:
    url = urlparse(site.env["DATABASE_URL"])
    if url.scheme == "sqlite":
        run(require_program("sqlite3"), url.path, f".restore '{source}'")
    else:
        database = f"--dbname={site.env['DATABASE_URL']}"
        run(require_program("pg_restore"), "--clean", "--if-exists", database, str(source))


def test_backup_restore_then_sync_htpasswd(tmp_path):
    with procs.site(tmp_path) as site:
        site.driver("seed", "2", "0")
        snapshot = tmp_path / "backup.db"
        with procs.gunicorn(site, workers=2):  # taken while the app runs
            backup(site, snapshot)
            assert site.driver("revoke", "p1@acme.io") == {"status": "revoked"}
        assert users(site) == ["p0"]

        restore(site, snapshot)
        migrated = site.manage("migrate", "--noinput")
        assert migrated.returncode == 0, migrated.stderr
        # The restored database predates the revoke: the files now differ from it...
        check = site.manage("sync_htpasswd", "--check")
        assert check.returncode == 1 and "missing p1" in check.stdout
        # ...and sync_htpasswd makes them follow it: p1 has access again, as the doc warns.
        assert site.manage("sync_htpasswd").returncode == 0
        assert users(site) == ["p0", "p1"]
        assert site.driver("status", "p1@acme.io") == {"status": "active"}
