"""Requests per second through the rendered Apache config to a real
docker-registry, by bcrypt cost: what Basic auth costs a customer's pull.

Starts docker-registry and Apache (as www-data) on free loopback ports,
writes a 1,000-user tier file with the measured user last, and runs wrk for
5 s per case against `GET /v2/` (authenticated, proxied): Apache at bcrypt
cost 4, 5 and 10, and Apache and nginx with the user in the first or second
tier file. Bounded: about 45 s in all. Run as root (Apache drops to www-data).
"""
from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import django  # noqa: E402

django.setup()

from customers import htpasswd, passwords, proxyconf  # noqa: E402
from tests.servers import answers, free_port, start_apache, start_nginx, stop_apache, stop_nginx  # noqa: E402

USERS = 1_000
DURATION = "5s"
COSTS = (4, 5, 10)


def wrk(port: int, path: str, auth: str | None) -> float:
    args = ["wrk", "-t2", "-c8", "-d", DURATION, f"http://127.0.0.1:{port}{path}"]
    if auth:
        args[1:1] = ["-H", f"Authorization: Basic {auth}"]
    out = subprocess.run(args, check=False, capture_output=True, text=True, timeout=60).stdout
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non_2xx:
        raise SystemExit(f"wrk saw {non_2xx.group(1)} failed responses:\n{out}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


def main() -> int:
    for program in ("wrk", "docker-registry", "apache2"):
        if not (shutil.which(program) or Path("/usr/sbin", program).exists()):
            print(f"{program} is missing; run `make test` once to install the system packages")
            return 1
    root = Path(tempfile.mkdtemp(prefix="bench-proxy-"))
    root.chmod(0o755)
    registry = None
    apache = None
    nginx = None
    try:
        reg_port = free_port()
        (root / "registry.yml").write_text(
            f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {root}/storage\n"
            f"http:\n  addr: 127.0.0.1:{reg_port}\n"
        )
        registry = subprocess.Popen(["docker-registry", "serve", str(root / "registry.yml")],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while not answers(reg_port) and time.monotonic() < deadline:
            time.sleep(0.05)

        files = root / "htpasswd"
        files.mkdir(mode=0o755)
        plan = proxyconf.build_plan([proxyconf.TierSpec("pro", 1), proxyconf.TierSpec("enterprise", 2)])
        port = free_port()
        apache_root = root / "apache"
        apache_root.mkdir(mode=0o755)
        text = proxyconf.render("apache", plan, files, proxyconf.Options(
            listen=f"127.0.0.1:{port}", upstream=f"http://127.0.0.1:{reg_port}"))
        filler = passwords.hash_secret("filler", 4)
        entries = [(f"user{n:05d}", filler) for n in range(USERS - 1)]

        def write_tier(slug: str, cost: int) -> None:
            # "zz-<tier>" sorts last: the proxy scans the whole file for it.
            lines = htpasswd.render([*entries, (f"zz-{slug}", passwords.hash_secret("bench-secret", cost))])
            htpasswd.write_atomic(files / f"{slug}.htpasswd", lines, mode=0o644)

        def auth(slug: str) -> str:
            return base64.b64encode(f"zz-{slug}:bench-secret".encode()).decode()

        write_tier("enterprise", 5)
        write_tier("pro", COSTS[0])
        apache = start_apache(apache_root, port, text)
        print(f"registry direct, GET /v2/ no auth: {wrk(reg_port, '/v2/', None):,.0f} req/s")
        for cost in COSTS:
            write_tier("pro", cost)  # no reload: Apache re-reads the file per request
            rate = wrk(port, "/v2/", auth("pro"))
            print(f"Apache, bcrypt cost {cost:2d}, {USERS:,}-user tier, user last: {rate:,.0f} req/s "
                  f"(2 cores / rate = {2000 / rate:.1f} ms)")
        write_tier("pro", 5)
        rate = wrk(port, "/v2/", auth("enterprise"))
        print(f"Apache, bcrypt cost  5, user in the 2nd tier file (1st scanned too): {rate:,.0f} req/s")
        stop_apache(apache)
        apache = None

        nginx_root = root / "nginx"
        nginx_root.mkdir(mode=0o755)
        text = proxyconf.render("nginx", plan, files, proxyconf.Options(
            listen=f"127.0.0.1:{port}", upstream=f"http://127.0.0.1:{reg_port}"))
        nginx = start_nginx(nginx_root, port, text)
        for slug, where in (("pro", "1st tier file"), ("enterprise", "2nd tier file, via error_page 401")):
            rate = wrk(port, "/v2/", auth(slug))
            print(f"nginx, bcrypt cost  5, user in the {where}: {rate:,.0f} req/s")
        print("(the machine was shared with other jobs during this run)")
    finally:
        if apache:
            stop_apache(apache)
        if nginx:
            stop_nginx(nginx)
        if registry:
            registry.terminate()
            registry.wait(timeout=10)
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
