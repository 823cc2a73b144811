"""render_proxy_config: who may reach which repository, and configs that the
real Apache and nginx accept."""
from __future__ import annotations

import re
from io import StringIO

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command

from customers import proxyconf
from customers.models import Tier
from customers.proxyconf import TierSpec, build_plan

from .conftest import require_program
from .servers import (
    apache_config_test,
    apache_main_config,
    nginx_config_test,
    nginx_main_config,
    remove_tree,
    self_signed_certificate,
    world_readable_dir,
)


def render(proxy: str, *args: str) -> str:
    out = StringIO()
    call_command("render_proxy_config", proxy, *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def directives(text: str) -> list[str]:
    """Non-comment lines, stripped."""
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


# --- The plan: who reaches what --------------------------------------------------------------


def test_reserved_prefix_is_for_its_tier_and_the_tiers_that_include_it():
    plan = build_plan([
        TierSpec("pro", 1),
        TierSpec("enterprise", 2, prefixes=("example/faktory-ent",), includes=("pro",)),
        TierSpec("ultimate", 3, includes=("enterprise",)),
    ])
    assert plan.everyone.tiers == ("pro", "enterprise", "ultimate")
    assert [(a.prefix, a.tiers) for a in plan.reserved] == [("example/faktory-ent", ("enterprise", "ultimate"))]
    # Inclusion is transitive: ultimate includes enterprise, which includes pro.
    assert plan.unreserved.tiers == ("pro", "enterprise", "ultimate")
    assert plan.reachable("pro") == ["*"]
    assert plan.reachable("enterprise") == ["*", "example/faktory-ent"]


def test_tier_with_prefixes_and_no_includes_reaches_only_its_prefixes():
    plan = build_plan([TierSpec("pro", 1), TierSpec("partner", 2, prefixes=("partner/tools",))])
    assert plan.reachable("partner") == ["partner/tools"]
    assert plan.unreserved.tiers == ("pro",)


def test_longest_prefix_wins_and_comes_last():
    plan = build_plan([
        TierSpec("basic", 1, prefixes=("example",)),
        TierSpec("enterprise", 2, prefixes=("example/ent",)),
    ])
    assert [a.path for a in plan.reserved] == ["/v2/example/", "/v2/example/ent/"]
    assert plan.unreserved.tiers == ()


def test_include_cycles_terminate_and_order_follows_position():
    plan = build_plan([
        TierSpec("b", 2, prefixes=("b",), includes=("a",)),
        TierSpec("a", 1, prefixes=("a",), includes=("b",)),
    ])
    assert [(a.prefix, a.tiers) for a in plan.reserved] == [("a", ("a", "b")), ("b", ("a", "b"))]


@pytest.mark.parametrize("prefix", ["Example/x", "example/", "a b", 'x"y', "x\ny", "../etc", "_catalog", "a//b"])
def test_prefix_that_is_not_a_repository_name_is_refused(prefix):
    with pytest.raises(proxyconf.ProxyConfigError, match="not a repository name prefix"):
        build_plan([TierSpec("pro", 1, prefixes=(prefix,))])


def test_admin_form_refuses_a_bad_prefix(db):
    tier = Tier(slug="pro", name="Pro", repository_prefixes="example/ok\nNot OK")
    with pytest.raises(ValidationError) as caught:
        tier.full_clean()
    assert "not a repository name prefix" in str(caught.value.message_dict["repository_prefixes"])
    Tier(slug="ent", name="Ent", repository_prefixes="example/faktory-ent\n/example/tools/\n").full_clean()


# --- Apache ---------------------------------------------------------------------------------------


@pytest.fixture
def scoped_tiers(tiers) -> dict[str, Tier]:
    tiers["enterprise"].repository_prefixes = "example/faktory-ent\n\nexample/tools-ent/\n"
    tiers["enterprise"].save()
    tiers["enterprise"].includes.add(tiers["pro"])
    return tiers


def test_apache_fragment_has_a_provider_per_tier_and_no_server_level_lines(scoped_tiers, htpasswd_dir):
    text = render("apache")
    lines = directives(text)
    for slug in ("pro", "enterprise"):
        assert f"<AuthnProviderAlias file {slug}>" in lines
        assert f'AuthUserFile "{htpasswd_dir}/{slug}.htpasswd"' in lines
    assert "<VirtualHost *:443>" in lines
    assert 'ProxyPass "/v2/" "http://127.0.0.1:5000/v2/"' in lines
    assert "ProxyPreserveHost On" in lines
    assert "RequestHeader set X-Forwarded-Proto expr=%{REQUEST_SCHEME}" in lines
    assert any(line.startswith("Header always set Docker-Distribution-Api-Version") for line in lines)
    assert not any(re.match(r"(LoadModule|Listen|SSL)", line) for line in lines)
    # No cache that would keep a revoked customer in; no 2.2-style access control.
    assert "socache" not in "\n".join(lines).lower()
    assert not any(re.match(r"(Order|Allow|Deny|Satisfy)\b", line) for line in lines)


def test_apache_fragment_scopes_and_refuses_writes_and_the_catalog(scoped_tiers):
    text = render("apache")
    assert "AuthBasicProvider pro enterprise" in text
    assert "Require method GET HEAD OPTIONS" in text
    for prefix in ("example/faktory-ent", "example/tools-ent"):
        block = re.search(rf'<Location "/v2/{re.escape(prefix)}/">(.*?)</Location>', text, re.DOTALL)
        assert block and directives(block.group(1)) == ["AuthBasicProvider enterprise"]
    catalog = re.search(r'<Location "/v2/_catalog">(.*?)</Location>', text, re.DOTALL)
    assert directives(catalog.group(1)) == ["Require all denied"]
    # The catalog comes after every area that could otherwise open it.
    assert text.rindex("<Location") == text.index('<Location "/v2/_catalog">')


def test_apache_tls_and_names(tiers):
    text = render(
        "apache", "--listen", "10.0.0.5:8443", "--upstream", "http://10.0.0.9:5000/", "--server-name",
        "registry.example.com", "--tls-cert", "/etc/ssl/certs/reg.pem", "--tls-key", "/etc/ssl/private/reg.key",
    )
    lines = directives(text)
    assert "<VirtualHost 10.0.0.5:8443>" in lines
    assert "ServerName registry.example.com" in lines
    assert "SSLEngine on" in lines
    assert 'SSLCertificateFile "/etc/ssl/certs/reg.pem"' in lines
    assert 'SSLCertificateKeyFile "/etc/ssl/private/reg.key"' in lines
    assert 'ProxyPass "/v2/" "http://10.0.0.9:5000/v2/"' in lines


@pytest.mark.parametrize(
    "args, message",
    [
        (["--listen", "443"], "HOST:PORT"),
        (["--listen", "*:99999"], "HOST:PORT"),
        (["--upstream", "http://127.0.0.1:5000/v2"], "--upstream"),
        (["--upstream", "ftp://x"], "--upstream"),
        (["--tls-cert", "/etc/c.pem"], "go together"),
        (["--tls-cert", "/etc/c.pem", "--tls-key", "key.pem"], "absolute path"),
        (["--server-name", "a b"], "host name"),
        (["--htpasswd-dir", '/srv/"x'], "absolute path"),
    ],
)
def test_bad_options_are_operator_errors(tiers, args, message):
    with pytest.raises(CommandError, match=message):
        render("apache", *args)


def test_bad_prefix_in_the_database_names_the_tier(tiers):
    tiers["pro"].repository_prefixes = "Example/Upper"
    tiers["pro"].save()
    with pytest.raises(CommandError, match="tier 'pro'"):
        render("nginx")


def test_no_tier_reaching_unreserved_repositories_denies_them(tiers):
    for tier in tiers.values():
        tier.repository_prefixes = f"example/{tier.slug}"
        tier.save()
    text = render("apache")
    block = re.search(r'<LocationMatch "\^/v2/\[\^/\]">(.*?)</LocationMatch>', text, re.DOTALL)
    assert directives(block.group(1)) == ["Require all denied"]


def test_real_apache_accepts_the_fragment(scoped_tiers, tmp_path):
    require_program("apache2")
    cert, key = self_signed_certificate(tmp_path)
    for tls in ([], ["--tls-cert", str(cert), "--tls-key", str(key)]):
        fragment = tmp_path / "fragment.conf"
        fragment.write_text(render("apache", "--listen", "127.0.0.1:8443", *tls))
        main = tmp_path / "httpd.conf"
        main.write_text(apache_main_config(tmp_path, 8443, fragment, tls=bool(tls)))
        result = apache_config_test(main)
        assert result.returncode == 0, result.stderr
        assert "Syntax OK" in result.stderr


def test_real_nginx_accepts_the_fragment(scoped_tiers, tmp_path):
    require_program("nginx")
    cert, key = self_signed_certificate(tmp_path)
    root = world_readable_dir("registry-admin-nginx-t-")
    try:
        for tls in ([], ["--tls-cert", str(cert), "--tls-key", str(key)]):
            fragment = root / "fragment.conf"
            fragment.write_text(render("nginx", "--listen", "127.0.0.1:8443", *tls))
            main = root / "nginx.conf"
            main.write_text(nginx_main_config(root, fragment))
            result = nginx_config_test(main)
            assert result.returncode == 0, result.stderr
    finally:
        remove_tree(root)


def test_nginx_chains_the_tier_files_of_a_shared_location(scoped_tiers, htpasswd_dir):
    text = render("nginx")
    unreserved = re.search(r"location /v2/ \{(.*?)\}", text, re.DOTALL).group(1)
    assert f"auth_basic_user_file {htpasswd_dir}/pro.htpasswd;" in unreserved
    assert "error_page 401 = @registry_admin_1_enterprise;" in unreserved
    fallback = re.search(r"location @registry_admin_1_enterprise \{(.*?)\}", text, re.DOTALL).group(1)
    assert f"auth_basic_user_file {htpasswd_dir}/enterprise.htpasswd;" in fallback
    assert "error_page" not in fallback  # the last file answers 401 itself
    reserved = re.search(r"location \^~ /v2/example/faktory-ent/ \{(.*?)\}", text, re.DOTALL).group(1)
    assert f"auth_basic_user_file {htpasswd_dir}/enterprise.htpasswd;" in reserved
    assert "pro.htpasswd" not in reserved
    assert "location ^~ /v2/_catalog {\n        return 403;" in text


def test_command_warns_when_there_are_no_tiers(db):
    err = StringIO()
    call_command("render_proxy_config", "apache", stdout=StringIO(), stderr=err)
    assert "no tiers" in err.getvalue()


def test_check_reports_a_deployed_config_made_stale_by_a_tier_change(scoped_tiers, tmp_path):
    deployed = tmp_path / "registry.conf"
    deployed.write_text(render("apache", "--server-name", "registry.example.com"))
    out = StringIO()
    call_command("render_proxy_config", "apache", "--server-name", "registry.example.com",
                 "--check", str(deployed), stdout=out)
    assert "up to date" in out.getvalue()

    Tier.objects.create(slug="partner", name="Partner", position=3, repository_prefixes="partner/tools")
    out = StringIO()
    with pytest.raises(CommandError, match="out of date") as caught:
        call_command("render_proxy_config", "apache", "--server-name", "registry.example.com",
                     "--check", str(deployed), stdout=out)
    assert caught.value.returncode == 1
    assert "+<AuthnProviderAlias file partner>" in out.getvalue()
    assert deployed.read_text().count("AuthnProviderAlias file") == 2  # --check never writes
