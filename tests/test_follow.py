"""Several servers: `sync_htpasswd --follow` on server B rewrites B's files
as soon as server A commits a change (PostgreSQL LISTEN/NOTIFY)."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from customers import services

from .conftest import COMMAND, apache_verifies, database_url, file_users

pytestmark = pytest.mark.django_db(transaction=True)
REPO = Path(__file__).resolve().parent.parent


def wait_for(predicate, timeout: float = 10.0) -> float:
    """Seconds until ``predicate()`` holds; fails after ``timeout``."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            pytest.fail(f"not true after {timeout}s")
        time.sleep(0.005)
    return time.monotonic() - start


def test_follow_interval_must_be_positive(tiers):
    with pytest.raises(CommandError, match="--interval must be positive"):
        call_command("sync_htpasswd", "--follow", "--interval", "0", stdout=StringIO())


def test_other_server_follows_a_revoke_within_moments(tiers, htpasswd_dir, tmp_path):
    if connection.vendor != "postgresql":
        # SQLite means one server; following needs PostgreSQL's LISTEN/NOTIFY,
        # and the command says so instead of starting. (CI runs the suite on
        # PostgreSQL too, where the rest of this test runs.)
        with pytest.raises(CommandError, match="needs PostgreSQL"):
            call_command("sync_htpasswd", "--follow", stdout=StringIO())
        return
    server_b = tmp_path / "server-b"
    env = {**os.environ, "DATABASE_URL": database_url(), "HTPASSWD_DIR": str(server_b),
           "DJANGO_SETTINGS_MODULE": "tests.settings", "PYTHONPATH": str(REPO)}
    follower = subprocess.Popen(
        [sys.executable, "manage.py", "sync_htpasswd", "--follow", "--interval", "3600"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        wait_for(lambda: (server_b / "pro.htpasswd").exists() and (server_b / "enterprise.htpasswd").exists(), 30)

        customer = services.create_customer(name="Acme", email="ops@acme.io", tier=tiers["pro"], actor=COMMAND)
        services.issue_credential(customer, actor=COMMAND, username="acme", password="pw-acme")
        wait_for(lambda: file_users(server_b, "pro") == ["acme"])
        assert apache_verifies(server_b / "pro.htpasswd", "acme", "pw-acme")

        services.revoke(customer, actor=COMMAND)  # on "server A": this process
        assert file_users(htpasswd_dir, "pro") == []
        lag = wait_for(lambda: file_users(server_b, "pro") == [])
        assert lag < 2.0  # milliseconds in practice; the timer alone would take up to a minute

        services.reactivate(customer, actor=COMMAND)
        services.change_tier(customer, tiers["enterprise"], actor=COMMAND)
        wait_for(lambda: file_users(server_b, "enterprise") == ["acme"] and file_users(server_b, "pro") == [])
        assert (server_b / "enterprise.htpasswd").read_bytes() == (htpasswd_dir / "enterprise.htpasswd").read_bytes()
    finally:
        follower.terminate()
        output = follower.communicate(timeout=30)[0]
    assert "Following tier changes" in output, output
