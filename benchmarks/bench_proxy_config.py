"""Requests per second through the rendered Apache config to a real
docker-registry, by bcrypt cost: what Basic auth costs a customer's pull.

Starts docker-registry and Apache (as www-data) on free loopback ports,
writes a 1,000-user tier file with the measured user last, and runs wrk for
a few seconds per cost against `GET /v2/` (authenticated, proxied). Bounded:
about 30 s in all. Run as root (Apache drops to www-data).
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
from tests.servers import answers, free_port, start_apache, stop_apache  # noqa: E402

USERS = 1_000
DURATION = "5s"
COSTS = (4, 5, 10)


def wrk(port: int, path: str, auth: str | None) -> float:
    args = ["wrk", "-t2", "-c8", "-d", DURATION, f"http://127.0.0.1:{port}{path}"]
    if auth:
        args[1:1] = ["-H", f"Authorization: Basic {auth}"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=60).stdout
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
        htpasswd.write_atomic(files / "enterprise.htpasswd", "", mode=0o644)

        def write_tier(cost: int) -> None:
            # "zz-bench" sorts last: Apache scans the whole file for it.
            lines = htpasswd.render([*entries, ("zz-bench", passwords.hash_secret("bench-secret", cost))])
            htpasswd.write_atomic(files / "pro.htpasswd", lines, mode=0o644)

        write_tier(COSTS[0])
        apache = start_apache(apache_root, port, text)
        auth = base64.b64encode(b"zz-bench:bench-secret").decode()
        print(f"registry direct, GET /v2/ no auth: {wrk(reg_port, '/v2/', None):,.0f} req/s")
        for cost in COSTS:
            write_tier(cost)  # no reload: Apache re-reads the file per request
            rate = wrk(port, "/v2/", auth)
            print(f"through Apache, bcrypt cost {cost:2d}, {USERS:,}-user tier, user last: {rate:,.0f} req/s "
                  f"(≈ {2000 / rate:.1f} ms CPU per request on 2 cores)")
        print("(the machine was shared with other jobs during this run)")
    finally:
        if apache:
            stop_apache(apache)
        if registry:
            registry.terminate()
            registry.wait(timeout=10)
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
