"""Separate processes on a shared database: drivers, manage.py, gunicorn.

pytest-django's SQLite test database lives in memory, where no other
process can see it, so these tests use a database of their own: a SQLite
file under tmp_path when the suite runs on SQLite, or a scratch PostgreSQL
database next to the suite's when it runs on PostgreSQL. Either way it is
migrated with ``manage.py migrate`` under the production settings
(registry_admin.settings), exactly as an operator would.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
import requests
from django.conf import settings

REPO = Path(__file__).resolve().parent.parent
STAFF = ("staff", "staff-pw-1234")


def backend() -> str:
    return "postgresql" if "postgresql" in settings.DATABASES["default"]["ENGINE"] else "sqlite"


@dataclass
class Site:
    """One deployment's environment: database, tier files, static files."""

    env: dict[str, str]
    htpasswd_dir: Path
    tmp: Path

    def manage(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=REPO, env=self.env, capture_output=True, text=True, timeout=timeout,
        )

    def driver(self, *args: str, timeout: float = 180) -> dict:
        result = subprocess.run(
            [sys.executable, "-m", "tests.driver", *args],
            cwd=REPO, env=self.env, capture_output=True, text=True, timeout=timeout,
        )
        assert result.returncode == 0, f"driver {args} failed:\n{result.stdout}\n{result.stderr}"
        return json.loads(result.stdout.strip().splitlines()[-1])

    def start_driver(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.driver", *args],
            cwd=REPO, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )


def _postgres_url(name: str) -> str:
    db = settings.DATABASES["default"]
    user = quote(db.get("USER") or "postgres")
    password = f":{quote(db['PASSWORD'])}" if db.get("PASSWORD") else ""
    return f"postgres://{user}{password}@{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{name}"


def _postgres_admin(sql: str) -> None:
    import psycopg

    db = settings.DATABASES["default"]
    with psycopg.connect(
        host=db.get("HOST") or "127.0.0.1", port=db.get("PORT") or 5432, user=db.get("USER") or "postgres",
        password=db.get("PASSWORD") or None, dbname="postgres", autocommit=True,
    ) as conn:
        conn.execute(sql)


@contextlib.contextmanager
def site(tmp_path: Path) -> Iterator[Site]:
    """A migrated database and an htpasswd directory, for other processes."""
    htpasswd_dir = tmp_path / "htpasswd"
    if backend() == "postgresql":
        # Named after the suite's database, so engineers sharing a server
        # (ra_issue7, ra_issue3, ...) never collide.
        name = f"{settings.DATABASES['default']['NAME'].removeprefix('test_')}_procs"
        _postgres_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        _postgres_admin(f'CREATE DATABASE "{name}"')
        url = _postgres_url(name)
    else:
        name = None
        url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "registry_admin.settings",
        "DATABASE_URL": url,
        "SECRET_KEY": "procs-test-secret-key-" + "x" * 40,
        "DEBUG": "false",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "HTPASSWD_DIR": str(htpasswd_dir),
        "HTPASSWD_BCRYPT_ROUNDS": "4",
        "STATIC_ROOT": str(tmp_path / "static"),
        "PYTHONDONTWRITEBYTECODE": "1",
        "GUNICORN_ACCESSLOG": "-",
    }
    the_site = Site(env, htpasswd_dir, tmp_path)
    try:
        migrated = the_site.manage("migrate", "--noinput", "--verbosity", "0")
        assert migrated.returncode == 0, migrated.stderr
        yield the_site
    finally:
        if name:
            with contextlib.suppress(Exception):
                _postgres_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- gunicorn ----------------------------------------------------------------------


@dataclass
class Gunicorn:
    process: subprocess.Popen
    url: str
    log: Path

    def worker_pids(self) -> list[int]:
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        return [int(pid) for pid in children]

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def gunicorn(
    the_site: Site, workers: int = 2, config: Path | None = None, extra_env: dict | None = None
) -> Iterator[Gunicorn]:
    """``gunicorn registry_admin.wsgi`` with the repo's gunicorn.conf.py, on
    a loopback socket bound to a free port (passed to gunicorn as fd://)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    log = the_site.tmp / f"gunicorn-{port}.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "gunicorn"), "registry_admin.wsgi",
                "--config", str(config or REPO / "gunicorn.conf.py"),
                "--bind", f"fd://{sock.fileno()}", "--workers", str(workers),
            ],
            cwd=REPO, env={**the_site.env, **(extra_env or {})}, stdout=out, stderr=subprocess.STDOUT,
            pass_fds=[sock.fileno()],
        )
    sock.close()  # gunicorn has its own copy
    server = Gunicorn(process, f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(f"{server.url}/healthz", timeout=5)
                if len(server.worker_pids()) >= workers:
                    break
            except (requests.ConnectionError, FileNotFoundError):
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"gunicorn did not start:\n{server.log_text()}")
            time.sleep(0.2)
        yield server
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def staff_session(url: str) -> requests.Session:
    """Log in to the admin as a member of staff would: form, CSRF cookie, POST."""
    session = requests.Session()
    login = session.get(f"{url}/admin/login/", timeout=30)
    assert login.status_code == 200, login.text[:500]
    response = session.post(
        f"{url}/admin/login/",
        data={"username": STAFF[0], "password": STAFF[1], "next": "/admin/",
              "csrfmiddlewaretoken": session.cookies["csrftoken"]},
        allow_redirects=False,
        timeout=30,
    )
    assert response.status_code == 302, response.text[:500]
    return session


def admin_action(session: requests.Session, url: str, action: str, customer_id: int) -> requests.Response:
    return session.post(
        f"{url}/admin/customers/customer/",
        data={"action": action, "_selected_action": [str(customer_id)], "confirmed": "yes",
              "csrfmiddlewaretoken": session.cookies["csrftoken"]},
        timeout=60,
    )
