"""Settings for registry-admin.

Every setting an operator may change is read from the environment (or an
optional ``.env`` file at the repository root) here, and nowhere else.
Bad values fail loudly at start-up rather than misbehaving later.
"""
from __future__ import annotations

from datetime import timedelta
import socket
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = env.str("SECRET_KEY", default="")
LOCAL_SECRET_KEY_FILE = BASE_DIR / "var" / "secret_key"
if not SECRET_KEY and LOCAL_SECRET_KEY_FILE.exists():
    # The key `make run` generated for the local server, so that
    # `manage.py` works in that checkout too. Production sets SECRET_KEY.
    SECRET_KEY = LOCAL_SECRET_KEY_FILE.read_text().strip()
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY is required unless DEBUG is on.")
    SECRET_KEY = "insecure-development-key-only-used-with-DEBUG"
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    # django.contrib.admin, with the staff dashboard on its index page.
    "customers.admin_site.RegistryAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "customers.apps.CustomersConfig",
    "axes",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "customers.middleware.request_guard",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes requires: it turns a lockout into a 429 page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "registry_admin.urls"
WSGI_APPLICATION = "registry_admin.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "customers.context_processors.tier_file_alerts",
            ],
        },
    },
]

# --- Database ---------------------------------------------------------------
DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'var' / 'db.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Several gunicorn workers share one SQLite file. WAL lets readers run
    # beside the single writer; IMMEDIATE transactions take the write lock at
    # BEGIN, so a writer waits (up to `timeout` seconds) instead of failing
    # with "database is locked" when it later tries to upgrade a read lock.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
        }
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# --- Staff login hardening (django-axes) --------------------------------------
# Axes counts failed logins and locks out after AXES_FAILURE_LIMIT of them for
# AXES_COOLOFF_MINUTES. It must come first: it refuses a locked-out login
# before the password is even checked.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("AXES_COOLOFF_MINUTES", default=15))
# Lock the (username, client address) pair: an attacker cannot lock a staff
# member out from everywhere, and one address cannot keep guessing one
# account. Behind the proxy every request comes from its address, so this
# becomes per username; see docs/staff-guide.md.
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "admin/locked_out.html"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Static files (served by WhiteNoise) -------------------------------------
STATIC_URL = "static/"
# Where collectstatic puts the files WhiteNoise serves (e.g. /var/lib/registry-admin/static).
STATIC_ROOT = Path(env.str("STATIC_ROOT", default=str(BASE_DIR / "staticfiles")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

# --- HTTPS behind the proxy ---------------------------------------------------
# TLS ends at the proxy in front of gunicorn; it tells us the original scheme.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=False)
# Health checks and the webhook are called over plain HTTP on loopback.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^webhooks/"]
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=SECURE_SSL_REDIRECT)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=SECURE_SSL_REDIRECT)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

# --- registry-admin -----------------------------------------------------------
HTPASSWD_DIR = Path(env.str("HTPASSWD_DIR", default=str(BASE_DIR / "var" / "htpasswd")))


def _octal_mode(raw: str) -> int:
    try:
        mode = int(raw, 8)
    except ValueError:
        raise ImproperlyConfigured(f"HTPASSWD_FILE_MODE must be octal, like 0640; got {raw!r}.") from None
    if not 0 <= mode <= 0o777:
        raise ImproperlyConfigured(f"HTPASSWD_FILE_MODE {raw!r} is out of range.")
    return mode


HTPASSWD_FILE_MODE = _octal_mode(env.str("HTPASSWD_FILE_MODE", default="0640"))
HTPASSWD_FILE_GROUP = env.str("HTPASSWD_FILE_GROUP", default="") or None
HTPASSWD_BCRYPT_ROUNDS = env.int("HTPASSWD_BCRYPT_ROUNDS", default=5)
if not 4 <= HTPASSWD_BCRYPT_ROUNDS <= 17:
    raise ImproperlyConfigured("HTPASSWD_BCRYPT_ROUNDS must be between 4 and 17.")
# How long a writer waits for the cross-process lock on HTPASSWD_DIR.
HTPASSWD_LOCK_TIMEOUT = env.float("HTPASSWD_LOCK_TIMEOUT", default=10.0)

# Names this server in the tier-file status (each server writes its own copy).
NODE_NAME = env.str("NODE_NAME", default="") or socket.gethostname()

STRIPE_WEBHOOK_SECRET = env.str("STRIPE_WEBHOOK_SECRET", default="") or None
GRACE_PERIOD_DAYS = env.int("GRACE_PERIOD_DAYS", default=7)
if GRACE_PERIOD_DAYS < 0:
    raise ImproperlyConfigured("GRACE_PERIOD_DAYS must be 0 or more.")
# The host customers type in `docker login`; shown next to a new secret.
REGISTRY_HOST = env.str("REGISTRY_HOST", default="registry.example.com")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "customers": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    },
}
