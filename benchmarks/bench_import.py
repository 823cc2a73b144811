"""Import speed: 10,000 customers with given hashes, and 10,000 with
generated secrets against the floor of hashing that many secrets on all cores.

Runs against a fresh SQLite file in a temporary directory (or the database
in BENCH_DATABASE_URL, which it empties: point it at a scratch database).
Usage: python benchmarks/bench_import.py [--rows N] [--repeat K]
Each figure is the best of K runs, because the machine may be shared.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from io import StringIO
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def setup(workdir: Path) -> None:
    os.environ["DATABASE_URL"] = os.environ.get("BENCH_DATABASE_URL") or f"sqlite:///{workdir / 'bench.sqlite3'}"
    os.environ["HTPASSWD_DIR"] = str(workdir / "htpasswd")
    os.environ.setdefault("SECRET_KEY", "benchmark-only")
    os.environ["DJANGO_SETTINGS_MODULE"] = "registry_admin.settings"
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def reset() -> None:
    from django.db import connection

    from customers.models import AuditEvent, Credential, Customer, Tier

    # Plain SQL: deleting through the ORM would audit each row.
    with connection.cursor() as cursor:
        for model in (AuditEvent, Credential, Customer):
            cursor.execute(f"DELETE FROM {model._meta.db_table}")
    for slug in ("pro", "enterprise"):
        Tier.objects.get_or_create(slug=slug, defaults={"name": slug.title()})


def write_file(path: Path, rows: int, hashes: list[str] | None) -> Path:
    lines = ["email,name,tier,username,password_hash"]
    for i in range(rows):
        given = hashes[i % len(hashes)] if hashes else ""
        lines.append(f"user{i}@example.com,Customer {i},{'pro' if i % 3 else 'enterprise'},user{i},{given}")
    path.write_text("\n".join(lines) + "\n")
    return path


def timed_import(path: Path, *extra: str) -> tuple[float, str]:
    from django.core.management import call_command

    reset()
    out = StringIO()
    start = time.perf_counter()
    call_command("import_customers", str(path), *extra, stdout=out, stderr=StringIO())
    return time.perf_counter() - start, out.getvalue()


def hashing_floor(rows: int, rounds: int) -> tuple[float, float]:
    """Seconds to bcrypt ``rows`` fresh secrets on all cores: (raw pyca/bcrypt
    in threads, the project's passwords.hash_secret in threads)."""
    import bcrypt

    from customers import importing, passwords

    secrets = [passwords.generate_secret() for _ in range(rows)]
    start = time.perf_counter()
    importing.parallel_map(lambda s: bcrypt.hashpw(s.encode(), bcrypt.gensalt(rounds)), secrets)
    raw = time.perf_counter() - start
    start = time.perf_counter()
    importing.parallel_map(lambda s: passwords.hash_secret(s, rounds), secrets)
    return raw, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-import-"))
    try:
        setup(workdir)
        from django.conf import settings
        from django.db import connection

        from customers import importing, passwords

        rounds = settings.HTPASSWD_BCRYPT_ROUNDS
        print(f"database: {connection.vendor}; rows: {args.rows:,}; bcrypt cost {rounds}; "
              f"cores used: {importing.hashing_workers()}; best of {args.repeat}; load average "
              f"{os.getloadavg()[0]:.2f} (shared machine)")

        hashes = [passwords.hash_secret(f"given-{i}", rounds) for i in range(50)]
        given = write_file(workdir / "given.csv", args.rows, hashes)
        best = min(timed_import(given)[0] for _ in range(args.repeat))
        print(f"given hashes:      {best:6.2f} s  = {args.rows / best:8,.0f} rows/s   (aim: >= 5,000 rows/s)")

        generated = write_file(workdir / "generated.csv", args.rows, None)
        runs = []
        for n in range(args.repeat):
            out_path = workdir / f"secrets-{n}.csv"
            runs.append(timed_import(generated, "--credentials-out", str(out_path))[0])
        best_import = min(runs)
        floors = [hashing_floor(args.rows, rounds) for _ in range(args.repeat)]
        raw_floor = min(f[0] for f in floors)
        project_floor = min(f[1] for f in floors)
        print(f"generated secrets: {best_import:6.2f} s  = {args.rows / best_import:8,.0f} rows/s")
        print(f"hashing floor:     {raw_floor:6.2f} s  (pyca/bcrypt on all cores); "
              f"{project_floor:.2f} s through passwords.hash_secret")
        print(f"ratio to floor:    {best_import / raw_floor:6.2f}x  (aim: <= 1.3x)")
        return 0
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
