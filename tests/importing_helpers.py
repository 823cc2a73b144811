"""Helpers shared by the import and export tests."""

from __future__ import annotations

from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command


def run(command: str, *args: str) -> tuple[str, str]:
    """Run a command that should succeed; return (stdout, stderr)."""
    out, err = StringIO(), StringIO()
    call_command(command, *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def run_failing(command: str, *args: str) -> tuple[str, str]:
    """Run a command that should fail with CommandError; return (message, stderr)."""
    out, err = StringIO(), StringIO()
    with pytest.raises(CommandError) as excinfo:
        call_command(command, *args, stdout=out, stderr=err)
    return str(excinfo.value), err.getvalue()


def write_csv(path: Path, text: str, *, bom: bool = False, crlf: bool = False) -> Path:
    if crlf:
        text = text.replace("\n", "\r\n")
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


def file_state(directory: Path) -> dict[str, tuple[int, int, bytes]]:
    """(inode, mtime_ns, content) of every tier file: equal states mean untouched."""
    return {
        p.name: (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(directory.glob("*.htpasswd"))
    }
