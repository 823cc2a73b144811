"""What basic auth costs the proxy: authenticated requests per second
through Apache, measured with wrk on loopback.

Apache (mod_authn_file) opens the tier file on every request, scans it line
by line until it finds the user, and verifies the bcrypt hash. So the cost
grows with the bcrypt cost factor and with the user's position in the file.
This script starts a minimal Apache of its own (auth only, serving a small
static file; no registry needed) and measures, one after the other:

* no auth;
* a 1,000-line tier at the configured cost (HTPASSWD_BCRYPT_ROUNDS, default
  5), the user last; written by the app's own renderer and hasher;
* the same file with the user's hash made by Apache's ``htpasswd -B`` at
  its defaults: the issue's reference;
* the same at cost 4, 10 and 12;
* a 100,000-line tier with the user last (and first, for contrast).

Each run is bounded: BENCH_SECONDS (default 5) per scenario, about a
minute and a half in all. Usage: ``python benchmarks/bench_proxy_auth.py``.
"""
from __future__ import annotations

import base64
import os
import re
import shutil
import statistics
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from customers import htpasswd, passwords  # noqa: E402  (pure modules, no Django)

SECONDS = int(os.environ.get("BENCH_SECONDS", "5"))
AIM_ROUNDS = 3
THREADS = 2
CONNECTIONS = 8
USER = "zz-bench-user"  # sorts after every filler name: last in the file
FIRST_USER = "aa-bench-user"  # sorts first
PASSWORD = "bench-secret-0123456789"
CONFIGURED_COST = int(os.environ.get("HTPASSWD_BCRYPT_ROUNDS", "5"))
MODULES = ["mpm_event", "authn_core", "authn_file", "auth_basic", "authz_core", "authz_user", "mime"]


@dataclass
class Scenario:
    name: str
    label: str
    lines: int = 0
    cost: int | None = None
    apache_hash: bool = False  # the user's hash from `htpasswd -nbB` (its default cost)
    user: str = USER


SCENARIOS = [
    Scenario("noauth", "no auth"),
    Scenario("cost4", "1k lines, cost 4, user last", 1000, 4),
    Scenario("configured", f"1k lines, cost {CONFIGURED_COST} (configured), user last", 1000, CONFIGURED_COST),
    Scenario("apache-default", "1k lines, `htpasswd -B` default hash, user last", 1000, apache_hash=True),
    Scenario("cost10", "1k lines, cost 10, user last", 1000, 10),
    Scenario("cost12", "1k lines, cost 12, user last", 1000, 12),
    Scenario("big-last", f"100k lines, cost {CONFIGURED_COST}, user last", 100_000, CONFIGURED_COST),
    Scenario("big-first", f"100k lines, cost {CONFIGURED_COST}, user first", 100_000, CONFIGURED_COST, user=FIRST_USER),
]


def require(program: str) -> str:
    path = shutil.which(program) or next((p for p in (f"/usr/sbin/{program}",) if Path(p).exists()), None)
    if path is None:
        sys.exit(f"{program} is not installed (make system-packages installs it)")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tier_file(scenario: Scenario, filler_hash: str) -> str:
    """A tier file as the app writes it: its renderer, its header, sorted."""
    if scenario.apache_hash:
        out = subprocess.run(
            [require("htpasswd"), "-nbB", scenario.user, PASSWORD], capture_output=True, text=True, check=True
        ).stdout
        user_hash = out.strip().split(":", 1)[1]
    else:
        user_hash = passwords.hash_secret(PASSWORD, scenario.cost)
    # Apache only verifies the matching user's hash; the other lines are
    # scanned by name, so one valid hash can stand in for all of them.
    entries = [(f"user{i:06d}", filler_hash) for i in range(scenario.lines - 1)]
    entries.append((scenario.user, user_hash))
    return htpasswd.render(entries, header="benchmark tier")


def apache_cost(root: Path) -> str:
    text = (root / "files" / "apache-default.htpasswd").read_text()
    return re.search(rf"^{USER}:\$2y\$(\d\d)\$", text, re.M).group(1)


def apache_config(root: Path, port: int, scenarios: list[Scenario]) -> str:
    modules = "\n".join(f"LoadModule {m}_module /usr/lib/apache2/modules/mod_{m}.so" for m in MODULES)
    aliases, locations = [], []
    for scenario in scenarios:
        (root / "htdocs" / scenario.name).mkdir(parents=True)
        (root / "htdocs" / scenario.name / "ok.txt").write_text("ok\n")
        if scenario.name == "noauth":
            continue
        # As the rendered proxy config does it: one provider alias per tier file.
        aliases.append(
            f"<AuthnProviderAlias file tier-{scenario.name}>\n"
            f"    AuthUserFile {root}/files/{scenario.name}.htpasswd\n</AuthnProviderAlias>"
        )
        locations.append(
            f"<Location /{scenario.name}/>\n    AuthType Basic\n    AuthName bench\n"
            f"    AuthBasicProvider tier-{scenario.name}\n    Require valid-user\n</Location>"
        )
    return f"""
ServerRoot {root}
{modules}
Listen 127.0.0.1:{port}
ServerName 127.0.0.1
PidFile {root}/httpd.pid
ErrorLog {root}/error.log
LogLevel warn
TypesConfig /etc/mime.types
User www-data
Group www-data
KeepAlive On
MaxKeepAliveRequests 0
DocumentRoot {root}/htdocs
<Directory {root}/htdocs>
    Require all granted
</Directory>
{chr(10).join(aliases)}
{chr(10).join(locations)}
"""


def get(url: str, user: str | None = None, password: str | None = None) -> int:
    request = urllib.request.Request(url)
    if user:
        request.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def wrk(url: str, user: str | None, seconds: int = SECONDS) -> float:
    args = [require("wrk"), f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{seconds}s", "--timeout", "10s"]
    if user:
        token = base64.b64encode(f"{user}:{PASSWORD}".encode()).decode()
        args += ["-H", f"Authorization: Basic {token}"]
    out = subprocess.run([*args, url], capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        raise RuntimeError(f"{url}: {non2xx.group(1)} failed requests during the run:\n{out}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


def main() -> int:
    apache = require("apache2")
    root = Path(tempfile.mkdtemp(prefix="bench-proxy-"))
    os.chmod(root, 0o755)  # Apache's workers run as www-data
    (root / "files").mkdir(mode=0o755)
    filler = passwords.hash_secret("filler", 4)
    started = time.monotonic()
    for scenario in SCENARIOS:
        if scenario.lines:
            path = root / "files" / f"{scenario.name}.htpasswd"
            htpasswd.write_atomic(path, tier_file(scenario, filler), mode=0o644)
    port = free_port()
    (root / "httpd.conf").write_text(apache_config(root, port, SCENARIOS))
    server = subprocess.Popen([apache, "-f", str(root / "httpd.conf"), "-DFOREGROUND"])
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if get(f"{base}/noauth/ok.txt") == 200:
                    break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"Apache did not start:\n{(root / 'error.log').read_text(errors='replace')}")
            time.sleep(0.1)

        print(f"Apache {base}, wrk -t{THREADS} -c{CONNECTIONS} -d{SECONDS}s, {os.cpu_count()} cores, "
              f"load average before: {os.getloadavg()[0]:.2f}")
        print("| scenario | req/s | ms of CPU per request (2 cores) |")
        print("| --- | ---: | ---: |")
        rates: dict[str, float] = {}
        for scenario in SCENARIOS:
            url = f"{base}/{scenario.name}/ok.txt"
            user = None if scenario.name == "noauth" else scenario.user
            if user:  # the right password passes, a wrong one does not: we measure real checks
                assert get(url, user, PASSWORD) == 200, scenario.name
                assert get(url, user, "wrong") == 401, scenario.name
            # A slow hash completes only a few requests a second: give it
            # long enough for a meaningful count.
            seconds = max(SECONDS, 10) if (scenario.cost or 0) >= 10 else SECONDS
            rates[scenario.name] = rate = wrk(url, user, seconds)
            per_request = f"{2000 / rate:.2f}" if rate else "n/a"
            print(f"| {scenario.label} | {rate:,.1f} | {per_request} |", flush=True)

        # The aim: at the defaults, at least Apache's own `htpasswd -B`
        # throughput. On a shared machine one run of each is noise-prone,
        # so measure the pair again, interleaved, and compare medians.
        ours, theirs = [rates["configured"]], [rates["apache-default"]]
        for _ in range(AIM_ROUNDS - 1):
            for name, results in (("configured", ours), ("apache-default", theirs)):
                results.append(wrk(f"{base}/{name}/ok.txt", USER))
        ours_median, theirs_median = statistics.median(ours), statistics.median(theirs)
        print(f"aim, {AIM_ROUNDS} interleaved runs each: configured cost {CONFIGURED_COST} median "
              f"{ours_median:,.0f} req/s vs `htpasswd -B` default median {theirs_median:,.0f} req/s "
              f"(ratio {ours_median / theirs_median:.2f}; the `htpasswd -B` hash has cost "
              f"{apache_cost(root)})")
        print(f"total {time.monotonic() - started:.0f}s")
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
