"""Render, parse and atomically write htpasswd files.

This module is deliberately free of Django: it takes ``(username, hash)``
pairs and paths, so it can be tested with a temporary directory alone.

Why the care: Apache reads the tier file on every request. A file that is
missing or unreadable makes it answer 500, and a file rewritten in place is
seen half-written by concurrent requests (spurious 401s). So every write
goes to a temporary file in the same directory and is swapped in with
``os.replace``, which readers observe as either the old or the new file.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import grp
import os
import re
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

# The contract's username pattern. It excludes ':' (the field separator),
# whitespace and newlines (line injection) and a leading '#' (a comment).
USERNAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,149}"
USERNAME_RE = re.compile(USERNAME_PATTERN)
# A stored hash may contain neither the separator nor any whitespace.
HASH_FORBIDDEN_RE = re.compile(r"[\s:]")

LOCK_FILE_NAME = ".htpasswd.lock"
TEMP_PREFIX = ".tmp-"


class InvalidEntry(ValueError):
    """A username or hash that could corrupt an htpasswd file."""


class LockTimeout(OSError):
    """Another writer held the directory lock for too long."""


def validate_username(username: str) -> str:
    if not isinstance(username, str) or not USERNAME_RE.fullmatch(username):
        raise InvalidEntry(
            f"invalid username {username!r}: use 1 to 150 letters, digits or . _ @ + -, "
            "starting with a letter or digit"
        )
    return username


def username_candidates(email: str) -> Iterator[str]:
    """Valid usernames derived from an email's local part: ``ops``, then
    ``ops-2``, ``ops-3``… The caller takes the first one not in use."""
    base = re.sub(r"[^A-Za-z0-9._@+-]", "-", email.split("@", 1)[0]).lstrip("._@+-")[:140] or "customer"
    yield base
    n = 2
    while True:
        yield f"{base}-{n}"
        n += 1


def validate_hash(password_hash: str) -> str:
    if not password_hash or HASH_FORBIDDEN_RE.search(password_hash) or not _only_hash_characters(password_hash):
        raise InvalidEntry("invalid hash: it must be non-empty, with no whitespace and no ':'")
    return password_hash


def render(entries: Iterable[tuple[str, str]], header: str | None = None) -> str:
    """Render sorted ``username:hash`` lines, refusing anything unsafe.

    Usernames must be unique (case-insensitively): Apache stops at the first
    line that names a user, so a second one would silently be ignored.
    """
    entries = sorted(entries)
    _validate_entries(entries)
    lines = [f"# {part}".rstrip() for part in header.splitlines()] if header else []
    lines.extend(map(":".join, entries))
    return "\n".join(lines) + "\n" if lines else ""


# Whole-list checks, so a 100,000-line tier is validated by a few passes in C
# rather than 200,000 Python calls (see benchmarks/bench_revoke.py). When one
# fails, the per-entry check finds the culprit and names it.
_USERNAME_LIST_RE = re.compile(rf"(?:{USERNAME_PATTERN}\n)*")


# Every hash format we write or accept is printable ASCII without space or ':'.
_HASH_BYTES = bytes(c for c in range(0x21, 0x7F) if c != ord(":"))


def _only_hash_characters(text: str) -> bool:
    # bytes.translate deletes the allowed bytes in one C loop; anything left
    # is whitespace, a separator or non-ASCII. Much faster than a regex here.
    return text.isascii() and not text.encode("ascii").translate(None, _HASH_BYTES)


def _validate_entries(entries: list[tuple[str, str]]) -> None:
    usernames = [username for username, _ in entries]
    joined = "".join(f"{username}\n" for username in usernames)
    # The count catches a username with an embedded newline, which would
    # otherwise pass as two well-formed names.
    if joined.count("\n") != len(usernames) or not _USERNAME_LIST_RE.fullmatch(joined):
        for username in usernames:
            validate_username(username)
    hashes = [password_hash for _, password_hash in entries]
    if not all(hashes) or not _only_hash_characters("".join(hashes)):
        for password_hash in hashes:
            validate_hash(password_hash)
    folded = [username.lower() for username in usernames]
    if len(set(folded)) != len(folded):
        seen: set[str] = set()
        for username, key in zip(usernames, folded, strict=True):
            if key in seen:
                raise InvalidEntry(f"duplicate username {username!r}")
            seen.add(key)


@dataclass(frozen=True)
class ParsedLine:
    lineno: int
    username: str
    password_hash: str


@dataclass(frozen=True)
class ParseError:
    lineno: int
    message: str

    def __str__(self) -> str:
        return f"line {self.lineno}: {self.message}"


def parse(text: str) -> tuple[list[ParsedLine], list[ParseError]]:
    """Parse htpasswd text the way Apache does: skip blanks and '#' lines."""
    entries: list[ParsedLine] = []
    errors: list[ParseError] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        username, sep, password_hash = line.partition(":")
        if not sep:
            errors.append(ParseError(lineno, "expected 'username:hash'"))
            continue
        try:
            validate_username(username)
            validate_hash(password_hash)
        except InvalidEntry as exc:
            errors.append(ParseError(lineno, str(exc)))
            continue
        entries.append(ParsedLine(lineno, username, password_hash))
    return entries, errors


@contextlib.contextmanager
def directory_lock(directory: Path, timeout: float = 10.0) -> Iterator[None]:
    """Serialise writers to ``directory`` across processes with ``flock``.

    The caller holds this lock while it *reads the database and* writes, so
    two processes cannot finish out of order (an older snapshot overwriting
    a newer one).
    """
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / LOCK_FILE_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockTimeout(errno.EWOULDBLOCK, f"lock on {directory} held for over {timeout}s") from None
                time.sleep(0.005)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def write_atomic(path: Path, content: str, mode: int = 0o640, group: str | None = None) -> bool:
    """Replace ``path`` with ``content`` atomically. Return False if unchanged.

    A file that already holds ``content`` (with the right mode) is left
    alone, so its inode and mtime do not change: the registry's own htpasswd
    auth reloads on mtime, and operators can see when a file last changed.
    """
    data = content.encode("utf-8")
    gid = grp.getgrnam(group).gr_gid if group else None
    try:
        current = path.stat()
    except FileNotFoundError:
        current = None
    if current is not None and (current.st_mode & 0o777) == mode and gid in (None, current.st_gid):
        if current.st_size == len(data) and path.read_bytes() == data:
            return False

    fd, tmp_name = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as tmp:
            tmp.write(data)
            tmp.flush()
            os.fsync(tmp.fileno())
            # mkstemp creates 0600; set the final mode (and group) before
            # the file becomes visible, so Apache never sees it unreadable.
            os.fchmod(tmp.fileno(), mode)
            if gid is not None:
                os.fchown(tmp.fileno(), -1, gid)
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    _fsync_directory(path.parent)
    return True


def remove_stale_temp_files(directory: Path) -> list[str]:
    """Delete temp files a killed writer left behind; return their names.

    Call it only while holding ``directory_lock``: every writer takes that
    lock before it creates a temp file, so under the lock no temp file
    belongs to a live write. (``write_atomic`` cleans up after itself on
    any exception; only SIGKILL or a power cut between ``mkstemp`` and
    ``os.replace`` leaves one.)
    """
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        if name.startswith(TEMP_PREFIX):
            try:
                os.unlink(directory / name)
            except FileNotFoundError:
                continue
            except OSError:
                continue  # e.g. a read-only directory; the failed write itself is reported
            removed.append(name)
    return removed


def _fsync_directory(directory: Path) -> None:
    # Makes the rename itself durable: after a power loss the directory
    # entry points at the new file, not at nothing.
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
