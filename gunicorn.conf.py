"""gunicorn settings: `gunicorn registry_admin.wsgi` reads this file from the
working directory. Every value can be overridden on the command line or with
GUNICORN_CMD_ARGS; the common ones also with the environment variables below.

docs/production.md explains the choices (workers on SQLite vs PostgreSQL,
the systemd unit, the proxy in front).
"""
from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import environ

# The same optional .env file the Django settings read, so that the default
# worker count below sees the DATABASE_URL the app will use.
environ.Env.read_env(Path(__file__).resolve().parent / ".env", overwrite=False)

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
# Requests are short (admin pages, webhooks). A request that changes access
# also rewrites the tier files after its commit, under a cross-process lock,
# so more workers than cores buys little. On SQLite (the default database)
# use 2: there is one writer at a time anyway, and each extra worker only
# waits on the lock.
_on_sqlite = os.environ.get("DATABASE_URL", "sqlite:").startswith("sqlite:")
workers = int(os.environ.get("GUNICORN_WORKERS", 2 if _on_sqlite else min(4, multiprocessing.cpu_count() * 2)))
# Above HTPASSWD_LOCK_TIMEOUT (10 s) plus a write, so a request that waits
# for the file lock fails with a recorded error, not a killed worker.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", 30))
graceful_timeout = 30
# Recycle workers now and then, so a slow leak cannot grow without bound;
# the jitter keeps them from restarting all at once.
max_requests = 2000
max_requests_jitter = 200
# Trust X-Forwarded-* only from the local proxy.
forwarded_allow_ips = os.environ.get("GUNICORN_FORWARDED_ALLOW_IPS", "127.0.0.1,::1")
# The heartbeat file is touched constantly; keep it off a slow or full disk.
if os.path.isdir("/dev/shm"):
    worker_tmp_dir = "/dev/shm"
# gunicorn's control socket (~/.gunicorn/gunicorn.ctl) is not used here, and
# one fixed path per user would be shared by every instance on the host (and
# is read-only under the systemd unit's ProtectSystem). Reload with SIGHUP.
control_socket_disable = True
accesslog = os.environ.get("GUNICORN_ACCESSLOG", "-")
errorlog = "-"


def post_worker_init(worker) -> None:
    """Bring every tier file up to date as each worker starts.

    A worker that died between a commit and its file write (SIGKILL, the
    OOM killer, gunicorn's own timeout) left the files behind the database.
    The master replaces it at once, and the replacement repairs the files
    here, instead of waiting up to a minute for the sync_htpasswd timer.
    Files that already match are not touched, so this is cheap. It must
    never stop a worker from serving: a failure is logged and recorded like
    any failed write, and the timer retries.
    """
    try:
        from django.db import connections

        from customers import sync

        try:
            report = sync.sync_all()
        finally:
            connections.close_all()  # do not carry this connection into request handling
        if report.written:
            worker.log.warning("repaired tier files at worker start: %s", ", ".join(report.written))
    except Exception:  # noqa: BLE001 - e.g. a database not migrated yet
        worker.log.exception("could not check the tier files at worker start")
