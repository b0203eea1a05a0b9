"""Transport and login security: TLS in front, secure cookies and HSTS, local Swagger UI, login throttling,
constant-time token compares."""

import os
import re
import subprocess
import sys

import pytest
from django.contrib.auth.models import User
from django.test import Client

from tests.conftest import ROOT

pytestmark = pytest.mark.django_db

PRODUCTION = {
    "DJANGO_DEBUG": "false",
    "DJANGO_SECRET_KEY": "k7Hq-2vP9zR!xW4mT8nB3cY6uJ1sE5dA0fG*hL+oQ=iV_rK@wN",
    "DJANGO_ALLOWED_HOSTS": "previews.example.com",
    "DJANGO_CSRF_TRUSTED_ORIGINS": "https://previews.example.com",
    "DJANGO_BEHIND_TLS_PROXY": "true",
    "DJANGO_HSTS_PRELOAD": "true",
}


def _manage(*args: str, **environ: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "Q_", "PREVIEWS_"))}
    env.update(environ, DJANGO_SETTINGS_MODULE="config.settings")
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)


def test_production_settings_behind_tls_pass_check_deploy():
    result = _manage("check", "--deploy", "--fail-level", "WARNING", **PRODUCTION)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_without_the_tls_variables_check_deploy_names_what_is_missing():
    result = _manage("check", "--deploy", "--fail-level", "WARNING",
                     **{k: v for k, v in PRODUCTION.items() if k not in ("DJANGO_BEHIND_TLS_PROXY",
                                                                         "DJANGO_HSTS_PRELOAD")})
    assert result.returncode != 0
    for warning in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert warning in result.stderr + result.stdout


@pytest.fixture
def behind_tls(settings):
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
    settings.SECURE_HSTS_SECONDS = 31_536_000
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = True


def test_behind_tls_https_gets_hsts_and_http_is_redirected_but_probes_are_not(behind_tls, client):
    https = client.get("/accounts/login/", HTTP_X_FORWARDED_PROTO="https")
    assert https.status_code == 200 and https["Strict-Transport-Security"].startswith("max-age=31536000")
    assert https.cookies["csrftoken"]["secure"]
    assert client.get("/accounts/login/").status_code == 301
    assert client.get("/healthz").status_code == 200


def test_swagger_ui_is_served_from_our_own_static_files(client):
    html = client.get("/api/docs/").content.decode()
    assert "cdn.jsdelivr.net" not in html and "unpkg.com" not in html
    scripts = re.findall(r'src="([^"]+swagger-ui[^"]*\.js)"', html)
    assert scripts and all(s.startswith("/static/") for s in scripts)
    assert client.get(scripts[0]).status_code == 200


def test_the_metrics_token_is_compared_in_constant_time_and_still_checked(client, settings):
    settings.PREVIEWS_METRICS_TOKEN = "s3cret"
    source = (ROOT / "previews" / "metrics.py").read_text()
    assert "compare_digest" in source
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cre").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret").status_code == 200


# --- login throttling ---------------------------------------------------------------------------------------


@pytest.fixture
def ann(settings):
    from django.core.cache import cache

    cache.clear()
    settings.PREVIEWS_LOGIN_MAX_FAILURES = 3
    yield User.objects.create_user("ann", password="right-password")
    cache.clear()


def login(client, password, username="ann", address="10.0.0.1"):
    return client.post("/accounts/login/", {"username": username, "password": password}, REMOTE_ADDR=address)


def test_after_too_many_failures_even_the_right_password_waits(ann):
    client = Client()
    for _ in range(3):
        assert login(client, "wrong").status_code == 200
    refused = login(client, "right-password")
    assert refused.status_code == 429 and int(refused["Retry-After"]) > 0
    assert "Too many failed logins" in refused.content.decode()
    assert "_auth_user_id" not in client.session


def test_failures_from_one_address_lock_out_guessing_across_user_names(ann):
    client = Client()
    for name in ("bob", "carol", "dave"):
        login(client, "guess", username=name, address="10.9.9.9")
    assert login(client, "right-password", address="10.9.9.9").status_code == 429
    assert login(Client(), "right-password", address="10.0.0.2").status_code == 302  # ann's name is not locked


def test_the_admin_login_is_throttled_too(ann):
    ann.is_staff = True
    ann.save()
    client = Client()
    for _ in range(3):
        client.post("/admin/login/", {"username": "ann", "password": "wrong"}, REMOTE_ADDR="10.0.0.3")
    client.post("/admin/login/", {"username": "ann", "password": "right-password"}, REMOTE_ADDR="10.0.0.3")
    assert "_auth_user_id" not in client.session


def test_a_success_before_the_limit_resets_the_user_count(ann):
    client = Client()
    login(client, "wrong")
    login(client, "wrong")
    assert login(client, "right-password").status_code == 302
    assert login(Client(), "wrong", address="10.0.0.5").status_code == 200
    assert login(Client(), "right-password", address="10.0.0.6").status_code == 302
