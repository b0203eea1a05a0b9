"""Bearer-token authentication for CI: repository-scoped API tokens, or GitHub Actions OIDC tokens."""

from __future__ import annotations

from dataclasses import dataclass

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions, status

from previews import oidc, services, tokens
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


@dataclass(frozen=True)
class OidcUser:
    """A GitHub Actions job, by its verified OIDC claims, and the repository its repository id is linked to."""

    claims: oidc.GitHubClaims
    repository: Repository | None
    is_authenticated: bool = True

    @property
    def name(self) -> str:
        return f"workflow:{self.claims.actor_name}"


class OidcUnavailable(exceptions.APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "GitHub Actions tokens cannot be verified right now"
    wait = 60


def oidc_failed(exc: oidc.OidcError) -> exceptions.AuthenticationFailed:
    failure = exceptions.AuthenticationFailed(f"GitHub Actions token refused: {exc}")
    if exc.claim:
        failure.errors = [{"field": f"token.{exc.claim}", "message": str(exc)}]
    return failure


class BearerTokenAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            return None
        keyword, _, value = header.partition(" ")
        if keyword.lower() != "bearer" or not value.strip():
            raise exceptions.AuthenticationFailed("use 'Authorization: Bearer <token>'")
        value = value.strip()
        if not value.startswith(tokens.TOKEN_PREFIX) and oidc.looks_like_jwt(value):
            return self._authenticate_oidc(value)
        token = services.token_authenticate(value)
        if token is None:
            # Never echo the presented token: it may be a real secret sent to the wrong place.
            raise exceptions.AuthenticationFailed("the token is unknown or revoked")
        return TokenUser(token), token

    def _authenticate_oidc(self, value: str) -> tuple[OidcUser, None]:
        try:
            claims = oidc.verify(value)
        except oidc.OidcError as exc:
            raise oidc_failed(exc) from None
        except oidc.OidcUnavailable as exc:
            raise OidcUnavailable(f"GitHub Actions tokens cannot be verified right now: {exc}") from None
        return OidcUser(claims, oidc.repository_for(claims)), None

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="previews"'


class BearerTokenScheme(OpenApiAuthenticationExtension):
    target_class = "previews.api.auth.BearerTokenAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer",
                "description": "An API token (pvw_...) from the admin, or a GitHub Actions OIDC token for this "
                               "service's audience"}
