"""Test-only gunicorn config: the repo's gunicorn.conf.py, plus a pause
before each tier-file write while the file named by RA_TEST_PAUSE_FILE
exists. A paused worker writes its pid next to that file and then waits to
be killed, standing for a worker that dies between a commit and its write.
"""
import os
import time
from pathlib import Path

_repo_conf = Path(__file__).resolve().parent.parent / "gunicorn.conf.py"
exec(compile(_repo_conf.read_text(), str(_repo_conf), "exec"))  # noqa: S102 - our own config file
_repo_post_worker_init = post_worker_init  # noqa: F821 - defined by the exec above


def post_worker_init(worker):
    _repo_post_worker_init(worker)  # the repair at start runs unpatched
    from customers import htpasswd

    real_write = htpasswd.write_atomic
    pause = Path(os.environ["RA_TEST_PAUSE_FILE"])

    def paused_write(*args, **kwargs):
        if pause.exists():
            Path(f"{pause}.pid").write_text(str(os.getpid()))
            time.sleep(600)  # never resumes: the test kills this worker
        return real_write(*args, **kwargs)

    htpasswd.write_atomic = paused_write
