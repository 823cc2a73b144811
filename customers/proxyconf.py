"""Render the proxy (Apache 2.4 or nginx) configuration from the tiers.

The proxy decides, per request, whether a customer may pull: it checks the
Basic credentials against the tier files and refuses everything but reads.
What it needs from us is static (which tier files exist and which tiers may
reach which repositories), so it is rendered once and only needs rendering
again when tiers or their repository prefixes change. Customer changes only
rewrite the tier files, which both proxies re-read on every request.

Access rules, computed by ``build_plan`` (pure, no database):

* A tier *reaches* its own repositories and, transitively, those of the
  tiers it includes.
* A tier's repositories are its ``repository_prefixes``; a tier without
  prefixes owns every repository that no prefix reserves.
* A prefix covers the repository of that name and everything below it
  (``example/faktory-ent`` covers ``example/faktory-ent/cli`` but not
  ``example/faktory-enterprise``). When prefixes nest, the longest wins.

How tiers map onto each proxy:

* Apache: one ``AuthnProviderAlias`` per tier file, and each ``<Location>``
  lists the providers of the tiers allowed there. A customer of any other
  tier is unknown to those providers and gets 401.
* nginx reads one ``auth_basic_user_file`` per location. A location open to
  several tiers checks the first tier's file and, on 401, hands the request
  to a named location that checks the next (``error_page 401 = @next``),
  so the tier files stay the only files and nothing extra is written.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from django.template.loader import render_to_string

# A registry repository name, component by component (distribution's
# reference grammar). Anything else in a prefix could never match a
# repository, or could inject directives into the rendered config.
REPOSITORY_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
REPOSITORY_PREFIX_RE = re.compile(rf"{REPOSITORY_COMPONENT}(?:/{REPOSITORY_COMPONENT})*")
LISTEN_RE = re.compile(r"(\*|\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):[0-9]{1,5}")
SERVER_NAME_RE = re.compile(r"[A-Za-z0-9*][A-Za-z0-9.*-]*")
# Characters that would end a quoted path or a line in either config syntax.
UNSAFE_PATH_RE = re.compile(r"[\"'\\\s;{}$#]")

REALM = "Container registry"
PROXIES = ("apache", "nginx")


class ProxyConfigError(ValueError):
    """A tier setting or option that cannot be rendered safely."""


@dataclass(frozen=True)
class TierSpec:
    """What the proxy needs to know about one tier."""

    slug: str
    position: int = 0
    prefixes: tuple[str, ...] = ()
    includes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Area:
    """A part of the registry's URL space and the tiers allowed there, in
    provider order."""

    path: str  # URL path prefix, e.g. "/v2/example/faktory-ent/"
    tiers: tuple[str, ...]
    prefix: str = ""  # the repository prefix, for reserved areas


@dataclass
class ProxyPlan:
    tiers: list[TierSpec]
    everyone: Area  # /v2/ itself: `docker login` checks it with any tier
    unreserved: Area  # every repository no prefix reserves
    reserved: list[Area] = field(default_factory=list)  # shortest prefix first

    def reachable(self, slug: str) -> list[str]:
        """The repository prefixes a tier's customers may pull ("*": unreserved)."""
        areas = [self.unreserved, *self.reserved]
        return ["*" if area is self.unreserved else area.prefix for area in areas if slug in area.tiers]


def validate_prefix(prefix: str, tier: str) -> str:
    if not REPOSITORY_PREFIX_RE.fullmatch(prefix):
        raise ProxyConfigError(
            f"tier {tier!r}: {prefix!r} is not a repository name prefix "
            "(lowercase letters and digits, separated by '.', '_', '-' or '/')"
        )
    return prefix


def build_plan(specs: Iterable[TierSpec]) -> ProxyPlan:
    tiers = sorted(specs, key=lambda t: (t.position, t.slug))
    by_slug = {t.slug: t for t in tiers}
    reach = {t.slug: _reach(t.slug, by_slug) for t in tiers}
    order = [t.slug for t in tiers]

    def allowed(owners: set[str]) -> tuple[str, ...]:
        return tuple(slug for slug in order if reach[slug] & owners)

    owners_by_prefix: dict[str, set[str]] = {}
    for tier in tiers:
        for prefix in tier.prefixes:
            owners_by_prefix.setdefault(validate_prefix(prefix, tier.slug), set()).add(tier.slug)
    open_tiers = {t.slug for t in tiers if not t.prefixes}
    reserved = [
        Area(f"/v2/{prefix}/", allowed(owners), prefix)
        # Shortest first: Apache applies later <Location>s over earlier ones,
        # so the longest (most specific) prefix decides.
        for prefix, owners in sorted(owners_by_prefix.items(), key=lambda item: (len(item[0]), item[0]))
    ]
    return ProxyPlan(
        tiers=tiers,
        everyone=Area("/v2/", tuple(order)),
        unreserved=Area("/v2/", allowed(open_tiers)),
        reserved=reserved,
    )


def _reach(slug: str, by_slug: dict[str, TierSpec]) -> set[str]:
    """The tier and every tier it includes, transitively (cycles are fine)."""
    seen: set[str] = set()
    stack = [slug]
    while stack:
        current = stack.pop()
        if current in seen or current not in by_slug:
            continue
        seen.add(current)
        stack.extend(by_slug[current].includes)
    return seen


def plan_from_database() -> ProxyPlan:
    from .models import Tier

    specs = [
        TierSpec(
            slug=tier.slug,
            position=tier.position,
            prefixes=tuple(tier.prefixes),
            includes=tuple(included.slug for included in tier.includes.all()),
        )
        for tier in Tier.objects.prefetch_related("includes")
    ]
    return build_plan(specs)


# --- Rendering ---------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    listen: str = "*:443"
    upstream: str = "http://127.0.0.1:5000"
    server_name: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert)


def check_options(options: Options) -> Options:
    if not LISTEN_RE.fullmatch(options.listen) or not 0 < int(options.listen.rsplit(":", 1)[1]) < 65536:
        raise ProxyConfigError(f"--listen must be HOST:PORT (e.g. *:443 or 127.0.0.1:8443), not {options.listen!r}")
    upstream = urlsplit(options.upstream)
    if upstream.scheme not in ("http", "https") or not upstream.hostname or upstream.path not in ("", "/") \
            or upstream.query or upstream.fragment or upstream.username or UNSAFE_PATH_RE.search(options.upstream):
        raise ProxyConfigError(f"--upstream must be http(s)://HOST[:PORT], not {options.upstream!r}")
    if options.server_name is not None and not SERVER_NAME_RE.fullmatch(options.server_name):
        raise ProxyConfigError(f"--server-name {options.server_name!r} is not a host name")
    if bool(options.tls_cert) != bool(options.tls_key):
        raise ProxyConfigError("--tls-cert and --tls-key go together")
    for path in (options.tls_cert, options.tls_key):
        if path:
            _safe_path(path)
    return Options(
        listen=options.listen,
        upstream=options.upstream.rstrip("/"),
        server_name=options.server_name,
        tls_cert=options.tls_cert,
        tls_key=options.tls_key,
    )


def _safe_path(path: str | Path) -> str:
    text = str(path)
    if not text.startswith("/") or UNSAFE_PATH_RE.search(text):
        raise ProxyConfigError(f"{text!r} must be an absolute path without quotes, spaces, ';', '{{', '}}', '$' or '#'")
    return text


@dataclass(frozen=True)
class NginxLocation:
    """One nginx location block. A location open to several tiers checks the
    first tier's file; on 401 it hands over to a named location (``next``)
    that checks the next tier's file, and so on."""

    match: str  # what follows `location`, e.g. "^~ /v2/example/faktory-ent/" or "@registry_admin_2_pro"
    user_file: str | None  # None: no tier may enter (403)
    next: str | None = None


def render(proxy: str, plan: ProxyPlan, htpasswd_dir: str | Path, options: Options) -> str:
    if proxy not in PROXIES:
        raise ProxyConfigError(f"unknown proxy {proxy!r}; choose one of {', '.join(PROXIES)}")
    options = check_options(options)
    directory = _safe_path(htpasswd_dir).rstrip("/")
    context = {
        "plan": plan,
        "options": options,
        "realm": REALM,
        "files": {tier.slug: f"{directory}/{tier.slug}.htpasswd" for tier in plan.tiers},
        "tier_files": [(tier.slug, f"{directory}/{tier.slug}.htpasswd") for tier in plan.tiers],
        "areas": [plan.unreserved, *plan.reserved],
    }
    if proxy == "nginx":
        context["locations"] = _nginx_locations(plan, context["files"])
    return render_to_string(f"proxy/{proxy}.conf", context)


def _nginx_locations(plan: ProxyPlan, files: dict[str, str]) -> list[NginxLocation]:
    areas = [(plan.everyone, "= "), (plan.unreserved, ""), *((area, "^~ ") for area in plan.reserved)]
    locations = []
    for n, (area, modifier) in enumerate(areas):
        names = [f"{modifier}{area.path}", *(f"@registry_admin_{n}_{slug}" for slug in area.tiers[1:])]
        if not area.tiers:
            locations.append(NginxLocation(names[0], None))
        for i, slug in enumerate(area.tiers):
            locations.append(NginxLocation(names[i], files[slug], names[i + 1] if i + 1 < len(names) else None))
    return locations
