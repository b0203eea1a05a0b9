"""State changes. Each public function is one transaction and one story."""

from __future__ import annotations

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


def token_authenticate(plaintext: str) -> ApiToken | None:
    """The active token this plaintext belongs to, or None. Records when it was last used."""
    prefix = tokens.parse_prefix(plaintext)
    if prefix is None:
        return None
    token = ApiToken.objects.select_related("repository").filter(prefix=prefix, revoked_at=None).first()
    if token is None or not tokens.token_matches(plaintext, token.token_hash):
        return None
    now = timezone.now()
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    token.last_used_at = now
    return token


def token_revoke(token: ApiToken) -> None:
    ApiToken.objects.filter(pk=token.pk, revoked_at=None).update(revoked_at=timezone.now())
