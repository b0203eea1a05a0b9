"""Start-up checks and the data egress rule: previews on a site of their own, and the data server's egress never
open to every address."""

import pytest
from django.core.checks import run_checks

from previews import checks
from previews import data as preview_data
from tests.factories import make_repository


@pytest.mark.parametrize(("host", "site"), [
    ("pr-7.staging.example.com", "example.com"),
    ("staging.example.com", "example.com"),
    ("pr-7.previews.example.co.uk", "example.co.uk"),
    ("example-previews.com", "example-previews.com"),
    ("localhost", ""),
    ("preview.localhost", "preview.localhost"),
    ("10.0.0.1", ""),
    ("[::1]", ""),
])
def test_the_registrable_domain_of_a_host(host, site):
    assert checks.registrable_domain(host) == site


@pytest.mark.parametrize(("preview_domain", "host", "same"), [
    ("staging.example.com", "staging.example.com", True),
    ("previews.example.com", "app.example.com", True),
    ("example-previews.com", "app.example.com", False),
    ("preview.localhost", "localhost", False),
])
def test_previews_and_a_host_share_a_site(preview_domain, host, same):
    assert checks.same_site(preview_domain, host) is same


@pytest.mark.django_db
def test_a_repository_sharing_a_site_with_staging_is_warned_about_at_start_up(settings):
    settings.PREVIEWS_PUBLIC_URL = "https://previews.internal.example.net"
    settings.PREVIEWS_STAGING_HOSTS = ["staging.example.com"]
    make_repository(owner="acme", name="shop", base_domain="pr.staging.example.com")
    make_repository(owner="acme", name="own-site", base_domain="acme-previews.dev")
    warnings = [w for w in run_checks(databases=["default"]) if w.id == "previews.W001"]
    assert len(warnings) == 1
    assert "acme/shop" in warnings[0].msg and "staging.example.com" in warnings[0].msg
    assert "docs/routing.md" in warnings[0].hint


@pytest.mark.django_db
def test_a_repository_sharing_a_site_with_the_dashboard_is_warned_about(settings):
    settings.PREVIEWS_PUBLIC_URL = "https://previews.example.com"
    settings.PREVIEWS_STAGING_HOSTS = []
    make_repository(owner="acme", name="shop", base_domain="pr.example.com")
    assert [w.id for w in run_checks(databases=["default"]) if w.id == "previews.W001"] == ["previews.W001"]


# --- the data server's egress ------------------------------------------------------------------------------


@pytest.mark.parametrize(("host", "configured", "cidr"), [
    ("10.1.2.3", "", "10.1.2.3/32"),
    ("fd00::5", "", "fd00::5/128"),
    ("pg.data.svc", "10.20.0.0/16", "10.20.0.0/16"),
    ("pg.data.svc", "10.20.0.7/16", "10.20.0.0/16"),
])
def test_the_data_egress_cidr(host, configured, cidr):
    assert preview_data.egress_cidr(host, configured) == cidr


def test_a_data_host_name_without_a_cidr_is_refused_never_opened_to_everything():
    with pytest.raises(preview_data.DataConfigError, match="PREVIEWS_DATA_EGRESS_CIDR"):
        preview_data.egress_cidr("pg.example.com", "")


def test_a_cidr_that_is_not_a_network_is_refused():
    with pytest.raises(preview_data.DataConfigError, match="is not a network"):
        preview_data.egress_cidr("pg.example.com", "everything")


def test_a_data_host_name_without_a_cidr_is_warned_about_at_start_up(settings):
    settings.PREVIEWS_DATA_DATABASE_URL = "postgres://data@pg.example.com:5432/previews_data"
    settings.PREVIEWS_DATA_HOST = ""
    settings.PREVIEWS_DATA_EGRESS_CIDR = ""
    assert [w.id for w in checks.data_egress_check()] == ["previews.W002"]
    settings.PREVIEWS_DATA_EGRESS_CIDR = "10.0.0.0/8"
    assert checks.data_egress_check() == []
