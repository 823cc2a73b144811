"""gunicorn settings: `gunicorn registry_admin.wsgi` reads this file from the
working directory. Every value can be overridden on the command line or with
GUNICORN_CMD_ARGS."""
import multiprocessing
import os

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
# Requests are short (admin pages, webhooks); the file write happens inside
# the request, under a cross-process lock, so a few workers are plenty.
workers = int(os.environ.get("GUNICORN_WORKERS", min(4, multiprocessing.cpu_count() * 2)))
timeout = 30
graceful_timeout = 30
# Trust X-Forwarded-* only from the local proxy.
forwarded_allow_ips = os.environ.get("GUNICORN_FORWARDED_ALLOW_IPS", "127.0.0.1")
accesslog = "-"
errorlog = "-"
