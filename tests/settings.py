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
