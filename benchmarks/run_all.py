"""Run every benchmark in this folder (files named bench_*.py), one after
the other, and print their figures. `make bench` calls this."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    failed = 0
    for script in sorted(HERE.glob("bench_*.py")):
        print(f"\n=== {script.name} ===", flush=True)
        failed |= subprocess.run([sys.executable, str(script)], cwd=HERE.parent).returncode != 0
    return failed


if __name__ == "__main__":
    sys.exit(main())
