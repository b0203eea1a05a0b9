"""Strict parsing of settings from environment variables.

A malformed value stops start-up with an error that names the variable, rather
than being silently replaced by a default.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from urllib.parse import urlsplit

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class Env:
    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self.environ = os.environ if environ is None else environ

    def _raw(self, name: str) -> str | None:
        value = self.environ.get(name)
        if value is None or value.strip() == "":
            value = self._from_secrets_dir(name)
        if value is None or value.strip() == "":
            return None
        return value.strip()

    def _from_secrets_dir(self, name: str) -> str | None:
        """PREVIEWS_SECRETS_DIR: a directory of files named like the settings (a Kubernetes Secret mounted as a
        volume), read when the variable itself is not set. Secrets as files stay out of the process environment
        (which child processes inherit and crash reports and /proc/<pid>/environ show)."""
        directory = (self.environ.get("PREVIEWS_SECRETS_DIR") or "").strip()
        if not directory or not name.replace("_", "").isalnum():
            return None
        path = os.path.join(directory, name)
        if not os.path.isfile(path):
            return None
        try:
            with open(path, encoding="utf-8") as handle:
                return handle.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise ImproperlyConfigured(f"{name}: {path} cannot be read ({exc})") from None

    def str(self, name: str, default: str) -> str:
        value = self._raw(name)
        return default if value is None else value

    def bool(self, name: str, default: bool) -> bool:
        value = self._raw(name)
        if value is None:
            return default
        if value.lower() in _TRUE:
            return True
        if value.lower() in _FALSE:
            return False
        raise ImproperlyConfigured(
            f"{name}={value!r} is not a boolean: use one of true/false, 1/0, yes/no, on/off"
        )

    def int(self, name: str, default: int, *, minimum: int | None = None, maximum: int | None = None) -> int:
        value = self._raw(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            raise ImproperlyConfigured(f"{name}={value!r} is not a whole number") from None
        if minimum is not None and number < minimum:
            raise ImproperlyConfigured(f"{name}={number} is below the minimum {minimum}")
        if maximum is not None and number > maximum:
            raise ImproperlyConfigured(f"{name}={number} is above the maximum {maximum}")
        return number

    def list(self, name: str, default: list[str]) -> list[str]:
        value = self._raw(name)
        if value is None:
            return list(default)
        return [item.strip() for item in value.split(",") if item.strip()]

    def labels(self, name: str, default: dict[str, str]) -> dict[str, str]:
        """`key=value,key=value`, e.g. a label selector's matchLabels."""
        value = self._raw(name)
        if value is None:
            return dict(default)
        labels: dict[str, str] = {}
        for item in value.split(","):
            key, sep, val = item.strip().partition("=")
            if not sep or not key.strip():
                raise ImproperlyConfigured(f"{name}={value!r} must be key=value pairs separated by commas")
            labels[key.strip()] = val.strip()
        return labels

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.str(name, default)
        if value not in choices:
            raise ImproperlyConfigured(f"{name}={value!r} must be one of: {', '.join(choices)}")
        return value

    def postgres_url(self, name: str, default: str = "") -> str:
        """A postgres:// URL kept as text (empty when unset); malformed values stop start-up."""
        value = self.str(name, default)
        if value:
            parse_database_url(name, value)
        return value

    def database(self, name: str, default: str) -> dict:
        value = self.str(name, default)
        return parse_database_url(name, value)


def parse_database_url(name: str, url: str) -> dict:
    """A postgres:// URL as Django's DATABASES entry, parsed by dj-database-url (quoting, query options such as
    ?sslmode=require become OPTIONS); what it would accept silently (another engine, no host or database, a bad
    port) stops start-up here with the variable's name."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql"):
        raise ImproperlyConfigured(
            f"{name}={url!r} must be a postgres:// URL, e.g. postgres://user@127.0.0.1:5432/dbname"
        )
    if not parts.hostname or not parts.path.lstrip("/"):
        raise ImproperlyConfigured(f"{name}={url!r} needs a host and a database name")
    try:
        parts.port  # noqa: B018 (urlsplit checks the port only when it is read)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={url!r} has an invalid port") from None
    try:
        config = dj_database_url.parse(url, conn_max_age=60, conn_health_checks=True)
    except dj_database_url.ParseError as exc:
        raise ImproperlyConfigured(f"{name}={url!r} is not a valid URL: {exc}") from None
    config["PORT"] = str(config["PORT"] or 5432)
    # Django's backend, with a health check without a round trip (config/postgres/base.py).
    config["ENGINE"] = "config.postgres"
    return config
