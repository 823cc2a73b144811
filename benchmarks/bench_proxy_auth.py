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
import socket
import statistics
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


@dataclass
class Run:
    rate: float  # requests per second, as measured on this (possibly shared) machine
    cpu_ms: float  # Apache's CPU time per request, which other load barely changes

    @property
    def capacity(self) -> float:
        """Requests per second Apache could serve with all the cores to itself."""
        return (os.cpu_count() or 1) * 1000 / self.cpu_ms if self.cpu_ms else float("inf")


def apache_cpu_seconds(server_pid: int) -> float:
    """CPU time used so far by Apache: the parent, its live children, and
    (through the parent's cutime/cstime) the children it already reaped."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        pid, ppid = int(stat.parent.name), int(fields[1])
        if pid == server_pid:
            total += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
        elif ppid == server_pid:
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def wrk(url: str, user: str | None, server_pid: int, seconds: int = SECONDS) -> Run:
    args = [require("wrk"), f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{seconds}s", "--timeout", "10s"]
    if user:
        token = base64.b64encode(f"{user}:{PASSWORD}".encode()).decode()
        args += ["-H", f"Authorization: Basic {token}"]
    cpu_before = apache_cpu_seconds(server_pid)
    out = subprocess.run([*args, url], capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
    cpu = apache_cpu_seconds(server_pid) - cpu_before
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        raise RuntimeError(f"{url}: {non2xx.group(1)} failed requests during the run:\n{out}")
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    return Run(rate, 1000 * cpu / requests if requests else 0.0)


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
        print("| scenario | req/s measured | Apache CPU ms per request | req/s on idle cores (projected) |")
        print("| --- | ---: | ---: | ---: |")
        runs: dict[str, Run] = {}
        for scenario in SCENARIOS:
            url = f"{base}/{scenario.name}/ok.txt"
            user = None if scenario.name == "noauth" else scenario.user
            if user:  # the right password passes, a wrong one does not: we measure real checks
                assert get(url, user, PASSWORD) == 200, scenario.name
                assert get(url, user, "wrong") == 401, scenario.name
            # A slow hash completes only a few requests a second: give it
            # long enough for a meaningful count.
            seconds = max(SECONDS, 10) if (scenario.cost or 0) >= 10 else SECONDS
            runs[scenario.name] = run = wrk(url, user, server.pid, seconds)
            print(f"| {scenario.label} | {run.rate:,.1f} | {run.cpu_ms:.2f} | {run.capacity:,.0f} |", flush=True)

        # The aim: at the defaults, at least Apache's own `htpasswd -B`
        # throughput. On a shared machine wall-clock rates swing with other
        # load, so compare Apache's CPU per request, medians of interleaved runs.
        ours, theirs = [runs["configured"]], [runs["apache-default"]]
        for _ in range(AIM_ROUNDS - 1):
            for name, results in (("apache-default", theirs), ("configured", ours)):
                results.append(wrk(f"{base}/{name}/ok.txt", USER, server.pid))
        ours_ms = statistics.median(r.cpu_ms for r in ours)
        theirs_ms = statistics.median(r.cpu_ms for r in theirs)
        verdict = "met" if ours_ms <= theirs_ms * 1.1 else "NOT met"
        print(f"aim ({AIM_ROUNDS} interleaved runs each, medians): configured cost {CONFIGURED_COST}: "
              f"{ours_ms:.2f} ms CPU/request ({statistics.median(r.rate for r in ours):,.0f} req/s measured); "
              f"`htpasswd -B` default (cost {apache_cost(root)}): {theirs_ms:.2f} ms "
              f"({statistics.median(r.rate for r in theirs):,.0f} req/s measured): {verdict} "
              f"(within 10% counts as equal)")
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
