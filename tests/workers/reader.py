"""Read tier files in a loop, as Apache does, and count bad reads.

Usage: reader.py STOP_FILE PATH [PATH ...]
Prints "reads=N bad=M" and the first few bad reads; a read is bad if the
file is missing, empty, not newline-terminated, or holds a malformed line.
"""
from __future__ import annotations

import re
import sys
import time
from pathlib import Path

LINE = re.compile(r"#.*|[A-Za-z0-9][A-Za-z0-9._@+-]{0,149}:\$2y\$\d\d\$[./A-Za-z0-9]{53}")


def main() -> None:
    stop, paths = Path(sys.argv[1]), [Path(p) for p in sys.argv[2:]]
    reads, bad = 0, []
    deadline = time.monotonic() + 120
    while not stop.exists() and time.monotonic() < deadline:
        for path in paths:
            reads += 1
            try:
                text = path.read_text()
            except FileNotFoundError:
                bad.append(f"{path.name}: missing")
                continue
            if not text or not text.endswith("\n"):
                bad.append(f"{path.name}: empty or truncated ({len(text)} bytes)")
            elif not all(LINE.fullmatch(line) for line in text.splitlines()):
                bad.append(f"{path.name}: malformed line")
    print(f"reads={reads} bad={len(bad)}")
    for line in bad[:5]:
        print(line)


if __name__ == "__main__":
    main()
