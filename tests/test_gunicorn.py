"""Production serving: gunicorn with several workers, WhiteNoise, and other
processes changing access at the same time.

Runs on whichever database the suite runs on (SQLite file, or PostgreSQL
under `make test-postgres`), through ``gunicorn registry_admin.wsgi`` with
the repo's gunicorn.conf.py and the production settings.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from . import procs

pytestmark = pytest.mark.system

HEADER = "# Managed by registry-admin."
ROUNDS = 12  # revoke+reactivate cycles per customer per actor; bounded by DEADLINE too
DEADLINE = 150.0  # seconds for the whole workload, a generous bound on a shared machine


@pytest.fixture(scope="module")
def static_root(tmp_path_factory) -> Path:
    """collectstatic once (WhiteNoise's compressed manifest storage): the
    admin pages need the manifest under the production settings."""
    root = tmp_path_factory.mktemp("static")
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "registry_admin.settings",
        "SECRET_KEY": "collectstatic-only",
        "STATIC_ROOT": str(root),
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "--verbosity", "0"],
        cwd=procs.REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return root


@pytest.fixture
def site(tmp_path, static_root):
    with procs.site(tmp_path) as the_site:
        the_site.env["STATIC_ROOT"] = str(static_root)
        yield the_site


class FileReader(threading.Thread):
    """Reads the tier files as fast as it can, as Apache does on every
    request, and records anything a reader must never see."""

    def __init__(self, directory: Path, slugs: list[str], allowed: set[str], always: set[str]):
        super().__init__(daemon=True)
        self.paths = [directory / f"{slug}.htpasswd" for slug in slugs]
        self.allowed = allowed  # every line that may legitimately appear
        self.always = always  # users who are never touched: they must always be there
        self.stop = threading.Event()
        self.reads = 0
        self.problems: list[str] = []

    def run(self) -> None:
        seen_users: set[str] = set()
        while not self.stop.is_set():
            for path in self.paths:
                try:
                    text = path.read_text()
                except FileNotFoundError:
                    self.problems.append(f"{path.name} missing")  # Apache would answer 500
                    continue
                self.reads += 1
                if not text.startswith(HEADER) or not text.endswith("\n"):
                    self.problems.append(f"{path.name} partial: {text[-80:]!r}")
                    continue
                lines = [line for line in text.splitlines() if line and not line.startswith("#")]
                unknown = [line for line in lines if line not in self.allowed]
                if unknown:
                    self.problems.append(f"{path.name} has unknown lines {unknown[:3]}")
                seen_users.update(line.split(":", 1)[0] for line in lines)
                if path.name == "pro.htpasswd":
                    missing = {user for user in self.always if user.startswith("p")} - set(
                        line.split(":", 1)[0] for line in lines
                    )
                    if missing:
                        self.problems.append(f"paying customers locked out: {sorted(missing)}")
            if len(self.problems) > 20:
                break


def file_lines(directory: Path, slug: str) -> list[str]:
    text = (directory / f"{slug}.htpasswd").read_text()
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def test_workers_and_processes_revoke_and_reactivate_while_a_reader_checks_the_files(site):
    ids = site.driver("seed", "12", "6")["ids"]
    allowed = set(file_lines(site.htpasswd_dir, "pro") + file_lines(site.htpasswd_dir, "enterprise"))
    assert len(allowed) == 18
    # Each customer is changed by exactly one actor, so its final state is known.
    http_targets = [["p4", "p5"], ["e2", "e3"]]
    driver_targets = [["p6", "p7"], ["p8", "p9"], ["e4", "e5"]]
    steady = {"p0", "p1", "p2", "p3", "p10", "p11", "e0", "e1"}
    problems: list[str] = []
    started = time.monotonic()

    with procs.gunicorn(site, workers=2) as server:
        reader = FileReader(site.htpasswd_dir, ["pro", "enterprise"], allowed, steady)
        reader.start()
        drivers = [
            site.start_driver("flip", ",".join(f"{u}@acme.io" for u in targets), str(ROUNDS))
            for targets in driver_targets
        ]
        statuses: list[int] = []

        def staff_member(targets: list[str]) -> None:
            try:
                session = procs.staff_session(server.url)
                plan = [(action, user) for _ in range(ROUNDS) for user in targets
                        for action in ("revoke_selected", "reactivate_selected")]
                plan.append(("revoke_selected", targets[0]))
                for action, user in plan:
                    if time.monotonic() - started > DEADLINE:
                        problems.append("staff member ran out of time")
                        return
                    response = procs.admin_action(session, server.url, action, ids[user])
                    statuses.append(response.status_code)
                    verb = "Revoked" if action == "revoke_selected" else "Reactivated"
                    # The redirect after the action lands on the list, with its message.
                    if response.status_code != 200 or f"{verb} 1 customer(s)." not in response.text:
                        problems.append(f"{action} {user}: {response.status_code} {response.text[:300]!r}")
                    if "database is locked" in response.text:
                        problems.append(f"{action} {user}: database is locked")
            except Exception as exc:  # noqa: BLE001 - reported below, with the others
                problems.append(f"staff member failed: {exc!r}")

        syncs: list[int] = []

        def timer() -> None:
            # The one-minute sync_htpasswd timer, firing in the middle of it all.
            while any(thread.is_alive() for thread in staff) and len(syncs) < 10:
                result = site.manage("sync_htpasswd")
                syncs.append(result.returncode)
                if result.returncode != 0 or "locked" in result.stderr:
                    problems.append(f"sync_htpasswd failed: {result.stdout}{result.stderr}")

        staff = [threading.Thread(target=staff_member, args=(targets,)) for targets in http_targets]
        for thread in staff:
            thread.start()
        timer_thread = threading.Thread(target=timer)
        timer_thread.start()
        for thread in staff:
            thread.join(timeout=DEADLINE + 30)
        timer_thread.join(timeout=DEADLINE + 30)
        for driver in drivers:
            out, err = driver.communicate(timeout=DEADLINE + 30)
            if driver.returncode != 0 or "locked" in err:
                problems.append(f"driver failed ({driver.returncode}): {err[-2000:]}")
        reader.stop.set()
        reader.join(timeout=30)
        elapsed = time.monotonic() - started
        health = requests.get(f"{server.url}/healthz", timeout=30)
        log = server.log_text()

    print(f"{procs.backend()}: {len(statuses)} admin actions, {len(drivers)} driver processes x "
          f"{2 * ROUNDS * 2 + 1} changes, {len(syncs)} sync_htpasswd runs, {reader.reads} file reads "
          f"in {elapsed:.1f}s")
    assert not problems, "\n".join(problems)
    assert not reader.problems, "\n".join(reader.problems[:20])
    assert reader.reads > 100
    assert syncs and set(syncs) == {0}
    assert len(statuses) == 2 * (ROUNDS * 2 * 2 + 1) and set(statuses) == {200}
    assert "database is locked" not in log and "Traceback" not in log, log[-3000:]
    assert health.status_code == 200, health.text

    # At the end the files equal the database, and each customer is where
    # its last change put it.
    check = site.manage("sync_htpasswd", "--check")
    assert check.returncode == 0, check.stdout + check.stderr
    revoked = {targets[0] for targets in http_targets + driver_targets}
    pro_users = {line.split(":", 1)[0] for line in file_lines(site.htpasswd_dir, "pro")}
    enterprise_users = {line.split(":", 1)[0] for line in file_lines(site.htpasswd_dir, "enterprise")}
    assert pro_users == {f"p{i}" for i in range(12)} - revoked
    assert enterprise_users == {f"e{i}" for i in range(6)} - revoked
    for user in revoked:
        assert site.driver("status", f"{user}@acme.io") == {"status": "revoked"}


def test_whitenoise_serves_static_files_and_healthz_answers_on_plain_http(site, static_root):
    manifest_css = next(static_root.glob("admin/css/base.*.css"))
    with procs.gunicorn(site, workers=2) as server:
        hashed = requests.get(f"{server.url}/static/admin/css/{manifest_css.name}", timeout=30,
                              headers={"Accept-Encoding": "gzip"})
        assert hashed.status_code == 200
        assert "text/css" in hashed.headers["Content-Type"]
        assert "immutable" in hashed.headers.get("Cache-Control", "")  # hashed name: cache forever
        assert hashed.headers.get("Content-Encoding") == "gzip"
        assert requests.get(f"{server.url}/static/admin/css/base.css", timeout=30).status_code == 200
        assert requests.get(f"{server.url}/static/nope.css", timeout=30).status_code == 404
        health = requests.get(f"{server.url}/healthz", timeout=30)
        assert health.status_code == 200 and health.json() == {"status": "ok"}
        login = requests.get(f"{server.url}/admin/login/", timeout=30)
        assert login.status_code == 200 and f"/static/admin/css/{manifest_css.name}" in login.text


def test_a_worker_killed_between_commit_and_write_is_repaired_by_its_replacement(site, tmp_path):
    """SIGKILL a gunicorn worker after its revoke committed and before the
    file write. The master starts a replacement at once, and gunicorn.conf.py's
    post_worker_init brings the files up to date: the revoked customer is out
    of the file within seconds, not at the next sync_htpasswd run."""
    ids = site.driver("seed", "2", "0")["ids"]
    pause = tmp_path / "pause-before-write"
    pause.touch()
    with procs.gunicorn(site, workers=2, config=Path(__file__).with_name("gunicorn_pause.conf.py"),
                        extra_env={"RA_TEST_PAUSE_FILE": str(pause)}) as server:
        session = procs.staff_session(server.url)
        outcome: list = []
        request = threading.Thread(
            target=lambda: outcome.append(_post_catching(session, server.url, ids["p1"])), daemon=True
        )
        request.start()
        paused_marker = Path(f"{pause}.pid")
        deadline = time.monotonic() + 60
        while not paused_marker.exists():
            assert time.monotonic() < deadline, "the worker never reached the write"
            time.sleep(0.05)
        worker = int(paused_marker.read_text())
        # The revoke is committed: the database says so, the file does not.
        assert site.driver("status", "p1@acme.io") == {"status": "revoked"}
        assert "p1" in {line.split(":", 1)[0] for line in file_lines(site.htpasswd_dir, "pro")}
        pause.unlink()  # the replacement worker must not pause too
        killed_at = time.monotonic()
        os.kill(worker, signal.SIGKILL)
        while "p1" in {line.split(":", 1)[0] for line in file_lines(site.htpasswd_dir, "pro")}:
            assert time.monotonic() - killed_at < 60, "the drift was never repaired"
            time.sleep(0.02)
        window = time.monotonic() - killed_at
        request.join(timeout=30)
        # The replacement logs after it has written the file; give it a moment.
        while "repaired tier files at worker start" not in server.log_text() and time.monotonic() - killed_at < 30:
            time.sleep(0.05)
        log = server.log_text()
        health = requests.get(f"{server.url}/healthz", timeout=30)
    print(f"worker killed after commit: file repaired {window:.2f}s after the SIGKILL")
    assert "repaired tier files at worker start: pro" in log
    assert outcome and outcome[0] == "connection error"  # the killed request itself fails, visibly
    assert health.status_code == 200
    assert {line.split(":", 1)[0] for line in file_lines(site.htpasswd_dir, "pro")} == {"p0"}


def _post_catching(session, url: str, customer_id: int) -> str | int:
    try:
        return procs.admin_action(session, url, "revoke_selected", customer_id).status_code
    except requests.ConnectionError:
        return "connection error"


def _raw(url: str, request: bytes) -> int:
    """Send raw bytes, return the status code of the answer."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(request)
        head = b""
        while b"\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                break
            head += chunk
    return int(head.split(b" ", 2)[1])


def test_bad_http_input_through_gunicorn_gets_4xx(site):
    with procs.gunicorn(site, workers=2) as server:
        url = server.url
        assert requests.put(f"{url}/healthz", timeout=30).status_code == 405
        assert requests.delete(f"{url}/admin/", timeout=30).status_code == 405
        huge = requests.post(f"{url}/admin/login/", data=b"a=" + b"x" * (5 * 1024 * 1024), timeout=60,
                             headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert huge.status_code == 413
        assert requests.get(f"{url}/healthz?" + "a" * 10000, timeout=30).status_code in (400, 414)
        assert _raw(url, b"GARBAGE\r\n\r\n") == 400
        assert _raw(url, b"POST /admin/login/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: abc\r\n\r\n") == 400
        assert _raw(url, b"GET /healthz HTTP/1.1\r\nHost: evil.example\r\n\r\n") == 400
        assert requests.get(f"{url}/healthz", timeout=30).status_code == 200  # still serving
        log = server.log_text()
    assert "Traceback" not in log and '" 500 ' not in log, log[-3000:]


def test_behind_the_tls_proxy_with_the_documented_settings(site):
    from .test_production import production_env

    documented = production_env()
    env = {key: documented[key] for key in
           ["SECRET_KEY", "SECURE_SSL_REDIRECT", "SECURE_HSTS_SECONDS", "SECURE_HSTS_INCLUDE_SUBDOMAINS",
            "SECURE_HSTS_PRELOAD"]}
    with procs.gunicorn(site, workers=2, extra_env=env) as server:
        # Monitoring over plain HTTP on loopback: answered, not redirected.
        health = requests.get(f"{server.url}/healthz", allow_redirects=False, timeout=30)
        assert health.status_code == 200
        # The admin over plain HTTP: sent to HTTPS.
        plain = requests.get(f"{server.url}/admin/login/", allow_redirects=False, timeout=30)
        assert plain.status_code == 301 and plain.headers["Location"].startswith("https://")
        # Through the proxy (which sets X-Forwarded-Proto): served, with HSTS and Secure cookies.
        proxied = requests.get(f"{server.url}/admin/login/", allow_redirects=False, timeout=30,
                               headers={"X-Forwarded-Proto": "https"})
        assert proxied.status_code == 200
        assert "max-age=31536000" in proxied.headers["Strict-Transport-Security"]
        assert "Secure" in proxied.headers["Set-Cookie"]
