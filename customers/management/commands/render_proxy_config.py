from __future__ import annotations

import difflib
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from customers import proxyconf


class Command(BaseCommand):
    help = (
        "Print the proxy configuration for the tiers: an Apache 2.4 fragment to Include at the server level, "
        "or an nginx fragment to include in the http block. Basic auth against the tier files, read-only "
        "access, per-tier repository prefixes, and no catalog. Render it again after changing tiers or "
        "their repository prefixes; customer changes need no reload."
    )

    def add_arguments(self, parser):
        parser.add_argument("proxy", choices=proxyconf.PROXIES, help="Which proxy to configure.")
        parser.add_argument("--listen", default="*:443", help="HOST:PORT the virtual host listens on (default *:443).")
        parser.add_argument(
            "--upstream", default="http://127.0.0.1:5000", help="The registry (default http://127.0.0.1:5000)."
        )
        parser.add_argument("--server-name", help="The host name customers use, e.g. registry.example.com.")
        parser.add_argument("--tls-cert", help="Certificate (chain) file; with --tls-key, the proxy speaks TLS.")
        parser.add_argument("--tls-key", help="Private key file for --tls-cert.")
        parser.add_argument(
            "--htpasswd-dir",
            help="Where the proxy finds the tier files, if not at HTPASSWD_DIR (e.g. rendering for another host).",
        )
        parser.add_argument(
            "--check",
            metavar="PATH",
            help="Print nothing but the differences from the deployed config at PATH; exit 1 if it is out of date "
            "(e.g. after a tier or its prefixes changed). Pass the same options it was rendered with.",
        )

    def handle(self, *args, proxy: str, **options):
        settings_options = proxyconf.Options(
            listen=options["listen"],
            upstream=options["upstream"],
            server_name=options["server_name"],
            tls_cert=options["tls_cert"],
            tls_key=options["tls_key"],
        )
        try:
            plan = proxyconf.plan_from_database()
            text = proxyconf.render(
                proxy, plan, options["htpasswd_dir"] or settings.HTPASSWD_DIR, settings_options
            )
        except proxyconf.ProxyConfigError as exc:
            raise CommandError(str(exc)) from exc
        if options["check"]:
            self.check_deployed(Path(options["check"]), text)
            return
        if not plan.tiers:
            self.stderr.write("warning: there are no tiers yet, so no customer can pull")
        self.stdout.write(text, ending="")

    def check_deployed(self, path: Path, text: str) -> None:
        try:
            deployed = path.read_text()
        except OSError as exc:
            raise CommandError(f"cannot read {path}: {exc.strerror}") from exc
        if deployed == text:
            self.stdout.write(f"{path} is up to date.")
            return
        diff = difflib.unified_diff(
            deployed.splitlines(keepends=True), text.splitlines(keepends=True), str(path), "rendered now"
        )
        self.stdout.write("".join(diff), ending="")
        raise CommandError(f"{path} is out of date: render it again and reload the proxy.", returncode=1)
