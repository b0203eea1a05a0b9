"""Login throttling for the dashboard and the admin: after too many failed logins for a user name, or from one
client address, further logins from them are refused for a while, right password or not.

It sits in front of the model backend (AUTHENTICATION_BACKENDS) and counts failures from Django's
`user_login_failed` signal, so every login form is covered. Counts live in the cache: per web process with the
default local-memory cache, so the effective limit is multiplied by the number of processes.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.core.cache import cache
from django.core.exceptions import PermissionDenied
from django.dispatch import receiver


def _keys(request, username: str | None) -> list[str]:
    keys = [f"login-failures:user:{(username or '').lower()[:150]}"]
    address = request.META.get("REMOTE_ADDR", "") if request is not None else ""
    if address:
        keys.append(f"login-failures:addr:{address}")
    return keys


def locked_out(request, username: str | None) -> bool:
    return any((cache.get(key) or 0) >= settings.PREVIEWS_LOGIN_MAX_FAILURES for key in _keys(request, username))


class ThrottleBackend:
    """First in AUTHENTICATION_BACKENDS: refuses every login while its user name or address is locked out.

    It has no get_user, so it never logs anyone in, and force_login and sessions use the model backend."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if locked_out(request, username):
            if request is not None:
                request.login_throttled = settings.PREVIEWS_LOGIN_LOCKOUT_SECONDS
            raise PermissionDenied("too many failed logins")
        return None  # not locked out: the next backend decides


@receiver(user_login_failed)
def _count_failure(sender, credentials, request=None, **kwargs) -> None:
    for key in _keys(request, credentials.get("username")):
        cache.add(key, 0, settings.PREVIEWS_LOGIN_LOCKOUT_SECONDS)
        try:
            cache.incr(key)
        except ValueError:  # expired between add and incr
            cache.set(key, 1, settings.PREVIEWS_LOGIN_LOCKOUT_SECONDS)


@receiver(user_logged_in)
def _reset_on_success(sender, request, user, **kwargs) -> None:
    cache.delete(_keys(None, user.get_username())[0])
