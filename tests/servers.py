"""Real servers for end-to-end tests: docker-registry, Apache and nginx on
free loopback ports, a stdlib-only OCI image builder, and small HTTP and
skopeo helpers.

Apache and nginx run their workers as www-data, which cannot enter pytest's
tmp_path (it sits under a 0700 directory). So everything those workers read
lives in a ``tempfile.mkdtemp()`` opened to 0755, and the tier files are
written group www-data, mode 0640, through HTPASSWD_FILE_GROUP, exactly as
in production.
"""
from __future__ import annotations

import base64
import gzip
import hashlib
import http.client
import io
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from .conftest import require_program

APACHE_MODULES = "/usr/lib/apache2/modules"
# What the rendered fragment needs (mod_unixd is built in). mpm_event is
# Debian's default MPM.
APACHE_MODULE_NAMES = (
    "mpm_event",
    "authn_core",
    "authn_file",
    "authz_core",
    "authz_user",
    "auth_basic",
    "headers",
    "proxy",
    "proxy_http",
)
START_TIMEOUT = 20.0
PROXY_USER = "www-data"


def free_port() -> int:
    """A port nobody listens on right now (bound to port 0 by the kernel)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, timeout: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    detail = f"\n--- {log} ---\n{log.read_text(errors='replace')[-4000:]}" if log and log.exists() else ""
    pytest.fail(f"{what} did not come up within {timeout:.0f}s{detail}")


def answers(port: int, path: str = "/v2/", tls: bool = False) -> bool:
    try:
        request("GET", port, path, timeout=2, tls=tls)
    except OSError:
        return False
    return True


def world_readable_dir(prefix: str) -> Path:
    """A fresh directory the proxy's unprivileged workers can traverse."""
    directory = Path(tempfile.mkdtemp(prefix=prefix))
    directory.chmod(0o755)
    return directory


# --- HTTP ---------------------------------------------------------------------------


@dataclass
class Response:
    status: int
    headers: http.client.HTTPMessage
    body: bytes


def request(
    method: str,
    port: int,
    path: str,
    auth: tuple[str, str] | None = None,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30,
    tls: bool = False,
) -> Response:
    """One request on a fresh connection, so each one is seen as new."""
    all_headers = dict(headers or {})
    if auth:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        all_headers["Authorization"] = f"Basic {token}"
    if tls:  # the test certificate is self-signed
        connection = http.client.HTTPSConnection(
            "127.0.0.1", port, timeout=timeout, context=ssl._create_unverified_context()
        )
    else:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=all_headers)
        response = connection.getresponse()
        return Response(response.status, response.headers, response.read())
    finally:
        connection.close()


# --- A tiny OCI image, built with the standard library ----------------------------------


OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@dataclass(frozen=True)
class OciImage:
    layout: Path  # an OCI image layout directory
    tag: str
    manifest_digest: str
    layer_digest: str


def _blob(blobs: Path, data: bytes) -> tuple[str, int]:
    digest = hashlib.sha256(data).hexdigest()
    (blobs / digest).write_bytes(data)
    return f"sha256:{digest}", len(data)


def build_oci_image(directory: Path, tag: str, content: str) -> OciImage:
    """An OCI layout holding one image: a config and one gzip layer with a
    single file whose text is ``content`` (so every image is different)."""
    blobs = directory / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    tar_bytes = io.BytesIO()
    with tarfile.open(fileobj=tar_bytes, mode="w", format=tarfile.PAX_FORMAT) as tar:
        data = content.encode()
        info = tarfile.TarInfo("hello.txt")
        info.size, info.mode, info.mtime = len(data), 0o644, 0
        tar.addfile(info, io.BytesIO(data))
    uncompressed = tar_bytes.getvalue()
    layer_digest, layer_size = _blob(blobs, gzip.compress(uncompressed, mtime=0))
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        # diff_ids name the *uncompressed* layer.
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{hashlib.sha256(uncompressed).hexdigest()}"]},
    }
    config_digest, config_size = _blob(blobs, json.dumps(config).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config_size,
        },
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest, "size": layer_size}
        ],
    }
    manifest_digest, manifest_size = _blob(blobs, json.dumps(manifest).encode())
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": OCI_MANIFEST,
                "digest": manifest_digest,
                "size": manifest_size,
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }
        ],
    }
    (directory / "index.json").write_text(json.dumps(index))
    (directory / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    return OciImage(directory, tag, manifest_digest, layer_digest)


# --- skopeo -----------------------------------------------------------------------------


def skopeo(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [require_program("skopeo"), "--insecure-policy", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def skopeo_inspect(port: int, reference: str, creds: tuple[str, str] | None) -> subprocess.CompletedProcess:
    auth = ["--creds", f"{creds[0]}:{creds[1]}"] if creds else ["--no-creds"]
    return skopeo("inspect", "--tls-verify=false", *auth, f"docker://127.0.0.1:{port}/{reference}")


def skopeo_copy_out(
    port: int, reference: str, creds: tuple[str, str], dest: Path, tag: str
) -> subprocess.CompletedProcess:
    return skopeo(
        "copy",
        "--src-tls-verify=false",
        "--src-creds",
        f"{creds[0]}:{creds[1]}",
        f"docker://127.0.0.1:{port}/{reference}",
        f"oci:{dest}:{tag}",
    )


# --- docker-registry ----------------------------------------------------------------------


@dataclass
class Registry:
    port: int
    storage: Path
    images: dict[str, OciImage]  # "repository:tag" -> the image pushed there

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def registry_server(tmp_path_factory) -> Iterator[Registry]:
    """A real registry, no auth of its own, deletes enabled: so a DELETE that
    got through the proxy would really delete."""
    program = require_program("docker-registry")
    root = tmp_path_factory.mktemp("registry")
    port = free_port()
    config = root / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: warn\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root / 'storage'}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    log = root / "registry.log"
    with log.open("wb") as log_file:
        process = subprocess.Popen([program, "serve", str(config)], stdout=log_file, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: answers(port), START_TIMEOUT, "docker-registry", log)
        yield Registry(port, root / "storage", {})
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def push_image(registry: Registry, workdir: Path, repository: str, tag: str) -> OciImage:
    """Build an image and push it straight to the registry (not through a proxy)."""
    image = build_oci_image(workdir / f"{repository.replace('/', '_')}-{tag}", tag, f"{repository}:{tag}\n")
    result = skopeo(
        "copy", "--dest-tls-verify=false", f"oci:{image.layout}:{tag}", f"docker://127.0.0.1:{registry.port}/{repository}:{tag}"
    )
    assert result.returncode == 0, result.stderr
    registry.images[f"{repository}:{tag}"] = image
    return image


# --- Apache ------------------------------------------------------------------------------


@dataclass
class Proxy:
    kind: str
    port: int
    root: Path
    error_log: Path
    tls: bool = False

    def log_tail(self) -> str:
        return self.error_log.read_text(errors="replace")[-4000:] if self.error_log.exists() else ""


def apache_main_config(root: Path, port: int, fragment: Path, tls: bool = False) -> str:
    names = (*APACHE_MODULE_NAMES, "socache_shmcb", "ssl") if tls else APACHE_MODULE_NAMES
    modules = "\n".join(f"LoadModule {name}_module {APACHE_MODULES}/mod_{name}.so" for name in names)
    return (
        f"ServerRoot {root}\n"
        f"DefaultRuntimeDir {root}\n"
        f"PidFile {root}/httpd.pid\n"
        f"ErrorLog {root}/error.log\n"
        "LogLevel warn\n"
        f"{modules}\n"
        f"User {PROXY_USER}\nGroup {PROXY_USER}\n"
        "ServerName 127.0.0.1\n"
        f"Listen 127.0.0.1:{port}\n"
        # Enough workers for the load test's concurrency, and quick shutdown.
        "StartServers 2\nThreadsPerChild 25\nMaxRequestWorkers 50\nGracefulShutdownTimeout 1\n"
        f"Include {fragment}\n"
    )


def apache_config_test(main_config: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [require_program("apache2"), "-f", str(main_config), "-t"],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )


def start_apache(root: Path, port: int, fragment_text: str, tls: bool = False) -> Proxy:
    program = require_program("apache2")
    fragment = root / "registry-admin.conf"
    fragment.write_text(fragment_text)
    main = root / "httpd.conf"
    main.write_text(apache_main_config(root, port, fragment, tls))
    result = subprocess.run(
        [program, "-f", str(main), "-k", "start"], check=False, capture_output=True, text=True, timeout=30
    )
    proxy = Proxy("apache", port, root, root / "error.log", tls)
    if result.returncode != 0:
        pytest.fail(f"apache2 did not start: {result.stderr}\n{proxy.log_tail()}")
    wait_until(lambda: answers(port, tls=tls), START_TIMEOUT, "Apache", proxy.error_log)
    return proxy


def stop_apache(proxy: Proxy) -> None:
    pid_file = proxy.root / "httpd.pid"
    pid = int(pid_file.read_text()) if pid_file.exists() else None
    subprocess.run(
        [require_program("apache2"), "-f", str(proxy.root / "httpd.conf"), "-k", "stop"],
        check=False,
        capture_output=True,
        timeout=30,
    )
    if pid is not None:
        _wait_for_exit(pid)


def _wait_for_exit(pid: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)


# --- nginx ----------------------------------------------------------------------------------


def nginx_main_config(root: Path, fragment: Path) -> str:
    temp = "\n".join(
        f"    {kind}_temp_path {root}/tmp-{kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return (
        f"user {PROXY_USER};\n"
        "worker_processes 2;\n"
        f"pid {root}/nginx.pid;\n"
        f"error_log {root}/error.log warn;\n"
        "events { worker_connections 256; }\n"
        "http {\n"
        "    access_log off;\n"
        f"{temp}\n"
        f"    include {fragment};\n"
        "}\n"
    )


def nginx_config_test(main_config: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [require_program("nginx"), "-t", "-c", str(main_config), "-p", str(main_config.parent)],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )


def start_nginx(root: Path, port: int, fragment_text: str, tls: bool = False) -> Proxy:
    program = require_program("nginx")
    fragment = root / "registry-admin.conf"
    fragment.write_text(fragment_text)
    main = root / "nginx.conf"
    main.write_text(nginx_main_config(root, fragment))
    result = subprocess.run(
        [program, "-c", str(main), "-p", str(root)], check=False, capture_output=True, text=True, timeout=30
    )
    proxy = Proxy("nginx", port, root, root / "error.log", tls)
    if result.returncode != 0:
        pytest.fail(f"nginx did not start: {result.stderr}\n{proxy.log_tail()}")
    wait_until(lambda: answers(port, tls=tls), START_TIMEOUT, "nginx", proxy.error_log)
    return proxy


def stop_nginx(proxy: Proxy) -> None:
    pid_file = proxy.root / "nginx.pid"
    if not pid_file.exists():
        return
    pid = int(pid_file.read_text())
    try:
        os.kill(pid, signal.SIGQUIT)  # graceful stop
    except ProcessLookupError:
        return
    _wait_for_exit(pid)


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [require_program("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=registry.test", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )
    return cert, key


# --- A stand-in upstream that records what the proxy forwards ---------------------------------


@dataclass
class Recorder:
    port: int
    seen: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)  # method, path, headers

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
def recording_upstream() -> Iterator[Recorder]:
    recorder = Recorder(0)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            recorder.seen.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}))
            body = b"{}"
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Docker-Distribution-API-Version", "registry/2.0")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_HEAD = do_GET

        def log_message(self, *args):  # keep the test output clean
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    recorder.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield recorder
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
