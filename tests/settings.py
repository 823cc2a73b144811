"""Settings for the test suite: the real settings, with fast hashing."""
import os

os.environ.setdefault("SECRET_KEY", "test-only-secret-key")

from registry_admin.settings import *  # noqa: E402,F401,F403

# Cheapest bcrypt cost: the suite hashes hundreds of secrets.
HTPASSWD_BCRYPT_ROUNDS = 4
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# The admin renders without running collectstatic first.
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# Some tests start worker processes that must share the test database, so
# SQLite's test database is a file (next to the app's own), not in memory.
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":  # noqa: F405
    (BASE_DIR / "var").mkdir(exist_ok=True)  # noqa: F405
    # One file per run, so two runs in one checkout cannot clobber each other.
    DATABASES["default"]["TEST"] = {"NAME": str(BASE_DIR / "var" / f"test-db-{os.getpid()}.sqlite3")}  # noqa: F405

# WhiteNoise scans STATIC_ROOT when it starts and warns on every request if it
# is missing; the suite serves static files through the finders instead.
if "STATIC_ROOT" not in os.environ:  # tests that collect static files set their own
    STATIC_ROOT = BASE_DIR / "var" / "test-static"  # noqa: F405
    STATIC_ROOT.mkdir(parents=True, exist_ok=True)
