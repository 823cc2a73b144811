from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from django.db import connection

from customers.audit import Actor
from customers.models import Tier

COMMAND = Actor.command("tests")


def require_program(name: str) -> str:
    """The path of a program the test needs. `make test` installs them; a
    missing one is a failure, never a silent skip."""
    path = shutil.which(name) or next(
        (str(p) for p in (Path("/usr/sbin") / name, Path("/usr/bin") / name) if p.exists()), None
    )
    if path is None:
        pytest.fail(f"{name} is not installed; run `make test`, which installs the system packages")
    return path


@pytest.fixture(autouse=True)
def htpasswd_dir(settings, tmp_path) -> Path:
    directory = tmp_path / "htpasswd"
    settings.HTPASSWD_DIR = directory
    return directory


@pytest.fixture
def tiers(db) -> dict[str, Tier]:
    return {
        "pro": Tier.objects.create(slug="pro", name="Pro", position=1),
        "enterprise": Tier.objects.create(slug="enterprise", name="Enterprise", position=2),
    }


def file_users(directory: Path, slug: str) -> list[str]:
    """The usernames in a tier file, in file order (comments skipped)."""
    text = (directory / f"{slug}.htpasswd").read_text()
    return [line.split(":", 1)[0] for line in text.splitlines() if line and not line.startswith("#")]


def apache_verifies(path: Path, username: str, password: str) -> bool:
    """Ask Apache's own htpasswd tool whether the file accepts the password."""
    result = subprocess.run(
        [require_program("htpasswd"), "-vb", str(path), username, password],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return result.returncode == 0


def database_url() -> str:
    """The URL of the test database this process uses, for worker processes."""
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        assert not connection.is_in_memory_db(), "worker processes need a file database"
        return f"sqlite:///{db['NAME']}"
    user = db["USER"] or "postgres"
    return f"postgres://{user}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
