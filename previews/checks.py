"""Start-up checks (Django's system checks: `manage.py check`, and before `migrate`, `qcluster`,
`watch_cluster`): settings that work but leave previews less isolated than they should be. Warnings, not errors:
the service still starts, and says what to change."""

from __future__ import annotations

import contextlib
import ipaddress
from urllib.parse import urlsplit

from django.conf import settings
from django.core.checks import Tags, Warning, register
from django.db import DatabaseError

# Second-level labels under two-letter country codes that are public suffixes themselves (co.uk, com.au...):
# enough to tell sites apart for a warning, without shipping the Public Suffix List.
_SECOND_LEVEL = frozenset({"co", "com", "net", "org", "gov", "edu", "ac", "ltd", "plc", "ne", "or", "go", "gv"})


def registrable_domain(host: str) -> str:
    """The site a host belongs to (`pr-7.staging.example.com` -> `example.com`, `a.b.co.uk` -> `b.co.uk`), ""
    for an IP address or a single label. An approximation of the Public Suffix List's answer. Pure."""
    host = (host or "").strip().rstrip(".").lower()
    try:
        ipaddress.ip_address(host.strip("[]"))
        return ""
    except ValueError:
        pass
    labels = [label for label in host.split(".") if label]
    if len(labels) < 2:
        return ""
    size = 3 if len(labels[-1]) == 2 and labels[-2] in _SECOND_LEVEL else 2
    return ".".join(labels[-size:]) if len(labels) >= size else ""


def same_site(preview_domain: str, host: str) -> bool:
    site = registrable_domain(preview_domain)
    return bool(site) and site == registrable_domain(host)


def protected_hosts() -> list[str]:
    """Hosts whose cookies a preview must not be able to set: the service's own, and PREVIEWS_STAGING_HOSTS."""
    own = urlsplit(settings.PREVIEWS_PUBLIC_URL).hostname or ""
    return [host for host in [own, *settings.PREVIEWS_STAGING_HOSTS] if host]


@register(Tags.security)
def preview_site_check(app_configs=None, databases=None, **kwargs) -> list[Warning]:
    """A preview shares a site with the dashboard or staging: its code can toss cookies to them."""
    domains: list[tuple[str, str]] = []
    if databases:  # with a database (migrate, `check --database default`): every repository's base domain
        from previews.models import Repository
        with contextlib.suppress(DatabaseError):  # not migrated yet: nothing to compare
            domains += [(f"repository {r.full_name}", r.base_domain) for r in Repository.objects.only(
                "owner", "name", "base_domain")]
    warnings = []
    for where, domain in domains:
        for host in protected_hosts():
            if domain and same_site(domain, host):
                warnings.append(Warning(
                    f"previews under {domain} ({where}) share the site {registrable_domain(host)} with {host}",
                    hint="A preview runs a PR's code: on the same registrable domain it can set cookies for "
                         f"{host} (cookie tossing: session fixation, CSRF cookies). Serve previews from a domain "
                         "of their own (e.g. example-previews.com); see docs/routing.md.",
                    id="previews.W001"))
    return warnings


@register(Tags.security)
def data_egress_check(app_configs=None, **kwargs) -> list[Warning]:
    """The data server given by name without PREVIEWS_DATA_EGRESS_CIDR: deploys with shared data would fail."""
    if not settings.PREVIEWS_DATA_DATABASE_URL or settings.PREVIEWS_DATA_EGRESS_CIDR:
        return []
    from previews.gateways import preview_db

    host, _port = preview_db.pod_address()
    try:
        ipaddress.ip_address(host)
        return []
    except ValueError:
        return [Warning(f"the preview data server is given by the name {host!r} and PREVIEWS_DATA_EGRESS_CIDR is "
                        "not set", hint="Set PREVIEWS_DATA_EGRESS_CIDR to the network the server's addresses are "
                        "in: until then deploys in schema or database data mode fail (a preview's egress is never "
                        "opened to every address).", id="previews.W002")]
