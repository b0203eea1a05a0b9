"""Bearer-token authentication for CI, with repository-scoped tokens."""

from __future__ import annotations

from dataclasses import dataclass

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions

from previews import services
from previews.models import ApiToken, Repository


@dataclass(frozen=True)
class TokenUser:
    """The caller behind a token; DRF wants a user object."""

    token: ApiToken
    is_authenticated: bool = True

    @property
    def name(self) -> str:
        return f"token:{self.token.name}"

    def may_act_on(self, repository_owner: str, repository_name: str) -> bool:
        scope: Repository | None = self.token.repository
        if scope is None:
            return True
        return (scope.owner.lower(), scope.name.lower()) == (repository_owner.lower(), repository_name.lower())


class BearerTokenAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            return None
        keyword, _, value = header.partition(" ")
        if keyword.lower() != "bearer" or not value.strip():
            raise exceptions.AuthenticationFailed("use 'Authorization: Bearer <token>'")
        token = services.token_authenticate(value.strip())
        if token is None:
            # Never echo the presented token: it may be a real secret sent to the wrong place.
            raise exceptions.AuthenticationFailed("the token is unknown or revoked")
        return TokenUser(token), token

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="previews"'


class BearerTokenScheme(OpenApiAuthenticationExtension):
    target_class = "previews.api.auth.BearerTokenAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "An API token (pvw_...) from the admin"}
