"""Settings come from environment variables and are parsed strictly."""

import os
import subprocess
import sys

import pytest
from django.core.exceptions import ImproperlyConfigured

from config.env import Env, parse_database_url


def test_unset_variables_take_their_defaults():
    env = Env({})
    assert env.bool("X", True) is True
    assert env.int("X", 5) == 5
    assert env.list("X", ["a"]) == ["a"]
    assert env.str("X", "d") == "d"


def test_blank_value_counts_as_unset():
    assert Env({"X": "  "}).int("X", 7) == 7


@pytest.mark.parametrize("raw,expected", [("true", True), ("1", True), ("On", True), ("no", False), ("0", False)])
def test_booleans_accept_the_usual_spellings(raw, expected):
    assert Env({"FLAG": raw}).bool("FLAG", not expected) is expected


def test_a_malformed_boolean_names_the_variable():
    with pytest.raises(ImproperlyConfigured, match=r"DJANGO_DEBUG='maybe' is not a boolean"):
        Env({"DJANGO_DEBUG": "maybe"}).bool("DJANGO_DEBUG", False)


def test_a_malformed_integer_names_the_variable():
    with pytest.raises(ImproperlyConfigured, match=r"Q_WORKERS='two' is not a whole number"):
        Env({"Q_WORKERS": "two"}).int("Q_WORKERS", 2)


def test_an_integer_out_of_range_is_refused():
    with pytest.raises(ImproperlyConfigured, match=r"Q_WORKERS=0 is below the minimum 1"):
        Env({"Q_WORKERS": "0"}).int("Q_WORKERS", 2, minimum=1)
    with pytest.raises(ImproperlyConfigured, match=r"Q_WORKERS=99 is above the maximum 64"):
        Env({"Q_WORKERS": "99"}).int("Q_WORKERS", 2, maximum=64)


def test_lists_are_comma_separated_and_trimmed():
    assert Env({"HOSTS": " a.example , b.example,, "}).list("HOSTS", []) == ["a.example", "b.example"]


def test_a_choice_outside_its_set_is_refused():
    with pytest.raises(ImproperlyConfigured, match=r"LOG_LEVEL='LOUD' must be one of"):
        Env({"LOG_LEVEL": "LOUD"}).choice("LOG_LEVEL", "INFO", ("DEBUG", "INFO"))


def test_database_url_is_split_into_django_settings():
    db = parse_database_url("DATABASE_URL", "postgres://app:s%40cret@db.internal:6543/previews")
    assert (db["USER"], db["PASSWORD"], db["HOST"], db["PORT"], db["NAME"]) == (
        "app", "s@cret", "db.internal", "6543", "previews"
    )


def test_database_url_options_reach_the_driver():
    db = parse_database_url("DATABASE_URL", "postgres://app@db.internal/previews?sslmode=require")
    assert (db["PORT"], db["OPTIONS"], db["CONN_MAX_AGE"]) == ("5432", {"sslmode": "require"}, 60)


@pytest.mark.parametrize(
    "url,message",
    [
        ("mysql://u@h/db", "must be a postgres:// URL"),
        ("postgres://u@h", "needs a host and a database name"),
        ("postgres://u@h:notaport/db", "has an invalid port"),
        ("not a url", "must be a postgres:// URL"),
    ],
)
def test_a_malformed_database_url_names_the_variable(url, message):
    with pytest.raises(ImproperlyConfigured, match="DATABASE_URL=.*" + message):
        parse_database_url("DATABASE_URL", url)


def _import_settings(**overrides: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "Q_", "PREVIEWS_"))}
    env.update(overrides)
    return subprocess.run(
        [sys.executable, "-c", "import config.settings"], env=env, capture_output=True, text=True, timeout=60
    )


def test_start_up_fails_on_a_malformed_variable_and_says_which():
    result = _import_settings(DJANGO_DEBUG="true", Q_WORKERS="lots")
    assert result.returncode != 0
    assert "Q_WORKERS='lots' is not a whole number" in result.stderr


def test_start_up_refuses_a_retry_that_does_not_exceed_the_task_timeout():
    result = _import_settings(DJANGO_DEBUG="true", Q_TIMEOUT="600", Q_RETRY="600")
    assert result.returncode != 0
    assert "Q_RETRY (600) must be greater than Q_TIMEOUT (600)" in result.stderr


def test_production_start_up_requires_a_secret_key():
    result = _import_settings(DJANGO_DEBUG="false")
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY must be set" in result.stderr


def test_defaults_start_up_cleanly_in_debug():
    assert _import_settings(DJANGO_DEBUG="true").returncode == 0


def test_task_queue_never_runs_a_task_twice_at_once(settings):
    assert settings.Q_CLUSTER["timeout"] < settings.Q_CLUSTER["retry"]
    assert 1 <= settings.Q_CLUSTER["max_attempts"] < 100
    assert settings.Q_CLUSTER["orm"] == "default"


def test_start_up_refuses_the_retired_per_cycle_cap_and_names_its_replacement():
    result = _import_settings(DJANGO_DEBUG="true", PREVIEWS_REAPER_MAX_DELETIONS="10")
    assert result.returncode != 0
    assert "PREVIEWS_REAPER_DELETIONS_PER_MINUTE" in result.stderr


@pytest.mark.parametrize("overrides,message", [
    ({"PREVIEWS_ROUTING": "mesh"}, "PREVIEWS_ROUTING='mesh' must be one of: ingress, gateway"),
    ({"PREVIEWS_GATEWAY_NAME": "Not A Name"}, "PREVIEWS_GATEWAY_NAME='Not A Name' is not a Kubernetes object name"),
    ({"PREVIEWS_GATEWAY_NAMESPACE": "-gw"}, "PREVIEWS_GATEWAY_NAMESPACE='-gw' is not a Kubernetes object name"),
    ({"PREVIEWS_GATEWAY_SECTION": "https_"}, "PREVIEWS_GATEWAY_SECTION='https_' is not a Kubernetes object name"),
])
def test_start_up_refuses_a_malformed_routing_setting(overrides, message):
    result = _import_settings(DJANGO_DEBUG="true", **overrides)
    assert result.returncode != 0
    assert message in result.stderr
