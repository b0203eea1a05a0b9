"""Static API tokens: created, authenticated (through a per-process cache), revoked."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from previews import tokens
from previews.models import ApiToken, Repository


@transaction.atomic
def token_create(
    *, name: str, repository: Repository | None, created_by: AbstractBaseUser | None = None
) -> tuple[ApiToken, str]:
    """Create a token and return it with its plaintext, which is never stored: show it once."""
    new = tokens.generate_token()
    token = ApiToken(name=name, repository=repository, prefix=new.prefix, token_hash=new.token_hash,
                     created_by=created_by)
    token.full_clean()
    token.save()
    return token, new.plaintext


@dataclass
class _CachedToken:
    token: ApiToken
    checked_at: float  # time.monotonic() of the database read that found it active


class TokenCache:
    """A per-process cache of active static tokens, by the SHA-256 of their plaintext.

    An entry is trusted for `settings.PREVIEWS_TOKEN_CACHE_SECONDS` after the database read that found the
    token active; then the row is read again. So a token revoked (or deleted, or re-scoped) in the admin or by
    another process is refused by every web process at most that many seconds later; `token_revoke` in this
    process drops the entry at once. Unknown and revoked tokens are never cached: each is a database read.
    """

    MAX_ENTRIES = 10_000  # far more than the tokens that exist; a full cache starts again empty

    def __init__(self, clock=time.monotonic) -> None:
        self._entries: dict[str, _CachedToken] = {}
        self._lock = threading.Lock()
        self.clock = clock

    def get(self, token_hash: str) -> ApiToken | None:
        entry = self._entries.get(token_hash)
        if entry is None or self.clock() - entry.checked_at >= settings.PREVIEWS_TOKEN_CACHE_SECONDS:
            return None
        return entry.token

    def put(self, token_hash: str, token: ApiToken, checked_at: float) -> None:
        if settings.PREVIEWS_TOKEN_CACHE_SECONDS <= 0:
            return
        with self._lock:
            if len(self._entries) >= self.MAX_ENTRIES:
                self._entries.clear()
            self._entries[token_hash] = _CachedToken(token, checked_at)

    def forget(self, token_pk: int) -> None:
        with self._lock:
            for key in [k for k, entry in self._entries.items() if entry.token.pk == token_pk]:
                del self._entries[key]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


TOKEN_CACHE = TokenCache()
LAST_USED_PRECISION = timedelta(minutes=1)


def token_authenticate(plaintext: str) -> ApiToken | None:
    """The active token this plaintext belongs to, or None. Records when it was last used.

    Served from TOKEN_CACHE while its entry is fresh (no query); otherwise one query. `last_used_at` is
    written at most once a minute per token and process (a minute's precision is plenty).
    """
    prefix = tokens.parse_prefix(plaintext)
    if prefix is None:
        return None
    token_hash = tokens.hash_token(plaintext)
    # A hit is an exact match of the presented token's SHA-256 with the hash of a token the database verified.
    token = TOKEN_CACHE.get(token_hash)
    if token is None:
        checked_at = TOKEN_CACHE.clock()
        token = ApiToken.objects.select_related("repository").filter(prefix=prefix, revoked_at=None).first()
        if token is None or not tokens.token_matches(plaintext, token.token_hash):
            return None
        TOKEN_CACHE.put(token_hash, token, checked_at)
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at > LAST_USED_PRECISION:
        # Set first, so that concurrent requests of this process sharing the cached token skip the write.
        token.last_used_at = now
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token


def token_revoke(token: ApiToken) -> None:
    ApiToken.objects.filter(pk=token.pk, revoked_at=None).update(revoked_at=timezone.now())
    TOKEN_CACHE.forget(token.pk)
