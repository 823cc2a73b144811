"""Real filesystem faults for the reliability tests.

The suite runs as root, and root ignores file modes, so ``chmod 0555``
would not stop a write. The kernel still refuses writes to a read-only
mount and to a full filesystem, whoever asks; so these helpers mount
a read-only bind mount over a directory, or a tiny tmpfs, and fill it.

Where mounting is impossible (not root, no CAP_SYS_ADMIN in a container),
the same fault is injected as the ``OSError`` the kernel would raise, at
the point it would raise it. Each helper says which one it used, and the
tests print it, so a run never claims a real fault it did not have.
"""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from customers import htpasswd


def _run(*args: str) -> bool:
    if os.geteuid() != 0 or shutil.which(args[0]) is None:
        return False
    return subprocess.run(args, capture_output=True, timeout=30).returncode == 0


def _unmount(target: Path) -> None:
    if not _run("umount", str(target)):
        _run("umount", "-l", str(target))  # busy: detach now, the kernel frees it later


def mounting_works() -> bool:
    """Probe once: can this process mount a tmpfs?"""
    probe = Path(tempfile.mkdtemp(prefix="ra-mount-probe-"))
    try:
        if not _run("mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)):
            return False
        _unmount(probe)
        return True
    finally:
        with contextlib.suppress(OSError):
            probe.rmdir()


@contextlib.contextmanager
def read_only(directory: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Make ``directory`` unwritable: a read-only bind mount over it (EROFS
    for everyone, root included), or injected EROFS where that is impossible."""
    directory.mkdir(parents=True, exist_ok=True)
    if _run("mount", "--bind", str(directory), str(directory)):
        try:
            if not _run("mount", "-o", "remount,bind,ro", str(directory)):
                raise RuntimeError(f"could not remount {directory} read-only")
            yield "read-only bind mount"
        finally:
            _unmount(directory)
        return
    with monkeypatch.context() as patch:
        # mkstemp is the writer's first write into the directory.
        patch.setattr(
            htpasswd.tempfile,
            "mkstemp",
            lambda *a, **k: (_ for _ in ()).throw(OSError(errno.EROFS, os.strerror(errno.EROFS))),
        )
        yield "injected EROFS"


@contextlib.contextmanager
def small_tmpfs(directory: Path, size: str = "256k") -> Iterator[bool]:
    """Mount a tiny tmpfs on ``directory``; yield False if mounting is impossible."""
    directory.mkdir(parents=True, exist_ok=True)
    if not _run("mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(directory)):
        yield False
        return
    try:
        yield True
    finally:
        _unmount(directory)


def fill(directory: Path) -> Path:
    """Fill the filesystem holding ``directory`` until writes get ENOSPC."""
    filler = directory / "filler.bin"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for chunk in (65536, 4096, 1):
            while True:
                try:
                    os.write(fd, b"\0" * chunk)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(fd)
    return filler


@contextlib.contextmanager
def injected_enospc(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """ENOSPC where a full disk reports it: when the temp file's data is
    flushed to disk (after the temp file exists, so its cleanup is tested)."""
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith(htpasswd.TEMP_PREFIX):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    with monkeypatch.context() as patch:
        patch.setattr(htpasswd.os, "fsync", fsync)
        yield "injected ENOSPC"


def temp_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(htpasswd.TEMP_PREFIX))
