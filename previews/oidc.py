"""GitHub Actions OIDC: verify a job's token and decide whether its claims may act on a preview.

Verification (PyJWT): RS256 only, the signature against the issuer's JWKS, `iss` exact, `aud`
exactly our audience, `exp`/`nbf`/`iat` with a small leeway and a maximum age of our own, and the
claims we rely on present and well typed. Keys are cached per process and fetched again only
when a token names an unknown `kid` (or the cache is older than PREVIEWS_OIDC_JWKS_CACHE_SECONDS),
at most once per PREVIEWS_OIDC_JWKS_COOLDOWN, so random `kid`s cannot make us fetch on every
request. The fetch itself is `_fetch_json`, the one place that talks HTTP to the issuer.

Authorisation (`authorize`, `check_sha`, `remember_use`) compares the claims with the repository
and the request; every refusal names the claim. See docs/oidc.md for what each check stops.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import requests
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from previews.gateways import errors, github
from previews.models import OidcTokenUse, Repository

logger = logging.getLogger(__name__)

ALGORITHM = "RS256"
PULL_REF = re.compile(r"^refs/pull/([0-9]+)/merge$")
SHA = re.compile(r"^[0-9a-f]{40}$")
# Claims every accepted token carries (GitHub sends them all for every job).
REQUIRED = ("iss", "aud", "exp", "iat", "jti", "repository", "repository_id", "repository_owner_id",
            "event_name", "ref", "sha", "run_id")


class OidcError(Exception):
    """The token is not a valid token from our issuer for us (HTTP 401)."""

    def __init__(self, message: str, claim: str = "") -> None:
        super().__init__(message)
        self.claim = claim


class OidcUnavailable(Exception):
    """The issuer's keys cannot be fetched, so no token can be verified right now (HTTP 503)."""


class ClaimRefused(Exception):
    """A valid token whose claims do not allow this request (HTTP 403)."""

    def __init__(self, claim: str, message: str) -> None:
        super().__init__(f"claim {claim}: {message}")
        self.claim = claim
        self.message = message


@dataclass(frozen=True)
class GitHubClaims:
    """The verified claims of a GitHub Actions job's token that we use."""

    repository: str
    repository_id: int
    repository_owner_id: int
    event_name: str
    ref: str
    sha: str
    jti: str
    expires_at: datetime
    run_id: str
    run_attempt: str = "1"
    workflow: str = ""
    job_workflow_ref: str = ""
    environment: str = ""
    repository_visibility: str = ""
    actor: str = ""

    @property
    def pr_number(self) -> int | None:
        match = PULL_REF.match(self.ref)
        return int(match.group(1)) if match else None

    @property
    def run_url(self) -> str:
        return f"{settings.GITHUB_WEB_URL}/{self.repository}/actions/runs/{self.run_id}/attempts/{self.run_attempt}"

    @property
    def actor_name(self) -> str:
        return f"{self.repository} {self.workflow or 'workflow'} run {self.run_id}/{self.run_attempt}"


# --- the JWKS cache and its HTTP gateway ---------------------------------------------------------------------


def _fetch_json(url: str) -> dict[str, Any]:
    """GET a JSON object from the issuer. Raises OidcUnavailable."""
    try:
        response = requests.get(url, timeout=settings.PREVIEWS_OIDC_TIMEOUT, headers={"Accept": "application/json"},
                                allow_redirects=False)
        response.raise_for_status()
        data = response.json()
    except (requests.RequestException, ValueError) as exc:
        raise OidcUnavailable(f"cannot fetch {url}: {exc.__class__.__name__}: {exc}") from exc
    if not isinstance(data, dict):
        raise OidcUnavailable(f"{url} did not answer a JSON object")
    return data


class KeySet:
    """The issuer's signing keys by `kid`, fetched lazily and again only on an unknown kid or old age."""

    def __init__(self, issuer: str, jwks_url: str) -> None:
        self.issuer = issuer
        self.jwks_url = jwks_url  # empty until discovered
        self.keys: dict[str, Any] = {}
        self.fetched_at: float | None = None
        self.last_refetch: float | None = None  # the last fetch caused by an unknown kid
        self.last_failure: float | None = None  # the last fetch that failed
        self._lock = threading.Lock()

    def key_for(self, kid: str) -> Any:
        with self._lock:
            now = time.monotonic()
            cooldown = settings.PREVIEWS_OIDC_JWKS_COOLDOWN

            def cooled(since: float | None) -> bool:
                return since is None or now - since >= cooldown

            fill = self.fetched_at is None or now - self.fetched_at > settings.PREVIEWS_OIDC_JWKS_CACHE_SECONDS
            if fill and cooled(self.last_failure):
                self._refresh(now)
            elif kid not in self.keys and cooled(self.last_refetch) and cooled(self.last_failure):
                # An unknown kid may be a key the issuer just rotated in: look once, then not again
                # for a cooldown, however many unknown kids arrive meanwhile.
                self.last_refetch = now
                self._refresh(now)
            if kid in self.keys:
                return self.keys[kid]
            if not self.keys:
                raise OidcUnavailable(f"no signing keys from {self.issuer} yet; retry in a minute")
            raise OidcError(f"the issuer has no key {kid!r} (kid)", claim="kid")

    def _refresh(self, now: float) -> None:
        try:
            self.keys = self._fetch()
            self.fetched_at = now
        except OidcUnavailable as exc:
            self.last_failure = now
            if not self.keys:
                raise
            logger.warning("keeping the cached OIDC keys: %s", exc)

    def _fetch(self) -> dict[str, Any]:
        if not self.jwks_url:
            discovery = _fetch_json(f"{self.issuer}/.well-known/openid-configuration")
            if discovery.get("issuer", "").rstrip("/") != self.issuer or not isinstance(discovery.get("jwks_uri"), str):
                raise OidcUnavailable(f"{self.issuer}'s discovery document names another issuer or no jwks_uri")
            self.jwks_url = discovery["jwks_uri"]
        data = _fetch_json(self.jwks_url)
        keys: dict[str, Any] = {}
        for entry in data.get("keys") or []:
            if not isinstance(entry, dict) or entry.get("kty") != "RSA" or not entry.get("kid"):
                continue
            if entry.get("use", "sig") != "sig" or entry.get("alg", ALGORITHM) != ALGORITHM:
                continue
            try:
                keys[entry["kid"]] = jwt.PyJWK(entry, algorithm=ALGORITHM).key
            except jwt.PyJWTError as exc:
                logger.warning("skipping an unusable key %r from %s: %s", entry.get("kid"), self.jwks_url, exc)
        if not keys:
            raise OidcUnavailable(f"{self.jwks_url} holds no RS256 signing keys")
        return keys


_keysets: dict[tuple[str, str], KeySet] = {}
_keysets_lock = threading.Lock()


def keyset() -> KeySet:
    """This process's key cache for the configured issuer and JWKS URL."""
    cache_key = (settings.PREVIEWS_OIDC_ISSUER, settings.PREVIEWS_OIDC_JWKS_URL)
    with _keysets_lock:
        if cache_key not in _keysets:
            _keysets[cache_key] = KeySet(*cache_key)
        return _keysets[cache_key]


def reset_cache() -> None:
    """Forget cached keys and commit parents (tests, or after changing the issuer settings)."""
    with _keysets_lock:
        _keysets.clear()
    _parents_cache.clear()


# --- verification ---------------------------------------------------------------------------------------------


def is_enabled() -> bool:
    return bool(settings.PREVIEWS_OIDC_ISSUER and settings.PREVIEWS_OIDC_AUDIENCE)


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2 and token.startswith("eyJ")


def verify(token: str) -> GitHubClaims:
    """The claims of a valid token from our issuer for our audience. Raises OidcError or OidcUnavailable."""
    if not is_enabled():
        raise OidcError("GitHub Actions OIDC is not enabled on this service (PREVIEWS_OIDC_ISSUER is empty)")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise OidcError(f"the token is not a JWT ({exc})") from None
    if header.get("alg") != ALGORITHM:
        raise OidcError(f"the token is signed with {header.get('alg')!r}; only RS256 is accepted", claim="alg")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise OidcError("the token names no signing key (kid)", claim="kid")
    key = keyset().key_for(kid)
    leeway = settings.PREVIEWS_OIDC_LEEWAY
    try:
        payload = jwt.decode(
            token, key, algorithms=[ALGORITHM], issuer=settings.PREVIEWS_OIDC_ISSUER, leeway=leeway,
            options={"require": list(REQUIRED), "verify_aud": False},  # aud: our stricter rule below
        )
    except jwt.ExpiredSignatureError:
        raise OidcError("the token has expired", claim="exp") from None
    except jwt.ImmatureSignatureError as exc:
        claim = "iat" if "iat" in str(exc) else "nbf"
        raise OidcError(f"the token is not valid yet ({claim} is in the future)", claim=claim) from None
    except jwt.InvalidIssuerError:
        raise OidcError(f"the token was not issued by {settings.PREVIEWS_OIDC_ISSUER}", claim="iss") from None
    except jwt.MissingRequiredClaimError as exc:
        raise OidcError(f"the token has no {exc.claim} claim", claim=exc.claim) from None
    except jwt.InvalidSignatureError:
        raise OidcError("the token's signature does not verify", claim="kid") from None
    except jwt.PyJWTError as exc:
        raise OidcError(f"the token is invalid: {exc}") from None
    _check_audience(payload["aud"])
    age = time.time() - payload["iat"]
    if age > settings.PREVIEWS_OIDC_MAX_TOKEN_AGE + leeway:
        raise OidcError(f"the token was issued {int(age)}s ago, more than the {settings.PREVIEWS_OIDC_MAX_TOKEN_AGE}s "
                        "this service accepts", claim="iat")
    return _claims(payload)


def _check_audience(aud: Any) -> None:
    """Exactly our audience: a string, or a list holding ours and nothing else.

    A token minted for several audiences can be replayed by each of them against the others, so a
    list with any other audience is refused even when ours is among them.
    """
    expected = settings.PREVIEWS_OIDC_AUDIENCE
    if aud == expected or aud == [expected]:
        return
    if isinstance(aud, list) and expected in aud:
        raise OidcError(f"the token is for several audiences ({len(aud)}); it must be for {expected!r} alone",
                        claim="aud")
    raise OidcError(f"the token is for audience {aud!r}, not {expected!r}", claim="aud")


def _id(payload: dict[str, Any], claim: str) -> int:
    value = payload[claim]
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isdecimal() and value.isascii():
        return int(value)
    raise OidcError(f"the {claim} claim is not a numeric id", claim=claim)


def _str(payload: dict[str, Any], claim: str) -> str:
    value = payload.get(claim, "")
    if value is None:
        return ""
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise OidcError(f"the {claim} claim is not a string", claim=claim)
    return str(value)


def _claims(payload: dict[str, Any]) -> GitHubClaims:
    if not _str(payload, "jti"):
        raise OidcError("the token has an empty jti claim", claim="jti")
    return GitHubClaims(
        repository=_str(payload, "repository"),
        repository_id=_id(payload, "repository_id"),
        repository_owner_id=_id(payload, "repository_owner_id"),
        event_name=_str(payload, "event_name"),
        ref=_str(payload, "ref"),
        sha=_str(payload, "sha"),
        jti=_str(payload, "jti")[:255],
        expires_at=datetime.fromtimestamp(payload["exp"], tz=UTC),
        run_id=_str(payload, "run_id"),
        run_attempt=_str(payload, "run_attempt") or "1",
        workflow=_str(payload, "workflow"),
        job_workflow_ref=_str(payload, "job_workflow_ref"),
        environment=_str(payload, "environment"),
        repository_visibility=_str(payload, "repository_visibility"),
        actor=_str(payload, "actor"),
    )


# --- authorisation ------------------------------------------------------------------------------------------


def repository_for(claims: GitHubClaims) -> Repository | None:
    """The repository linked to the token's immutable repository id (never its name)."""
    return Repository.objects.filter(github_repository_id=claims.repository_id).first()


def workflow_allowed(job_workflow_ref: str, entries: list[str]) -> bool:
    """Is `job_workflow_ref` (`owner/repo/path.yml@ref`) one of the allowed workflows? Pure.

    An entry with `@` must match whole (`…@refs/heads/main` does not admit `…@refs/heads/main-x`); an entry
    without `@` names a workflow file, matched whole, at any ref. Never a raw prefix."""
    path, at, ref = job_workflow_ref.partition("@")
    if not at or not path or not ref:
        return False
    return any(job_workflow_ref == entry if "@" in entry else path == entry for entry in entries)


def authorize(claims: GitHubClaims, repository: Repository | None, owner: str, name: str,
              pr_number: int | None) -> Repository:
    """The repository at {owner}/{name} if the claims may act on its PR `pr_number`; else ClaimRefused."""
    path = f"{owner}/{name}"
    if repository is None:
        raise ClaimRefused("repository_id", f"no repository here is linked to GitHub repository id "
                                            f"{claims.repository_id} ({claims.repository}); set its GitHub ids in "
                                            "the admin")
    if (repository.owner.lower(), repository.name.lower()) != (owner.lower(), name.lower()):
        raise ClaimRefused("repository_id", f"the token is for GitHub repository id {claims.repository_id}, "
                                            f"linked to {repository}, not {path}")
    if repository.github_owner_id is None or claims.repository_owner_id != repository.github_owner_id:
        raise ClaimRefused("repository_owner_id", f"the token's owner id {claims.repository_owner_id} is not the "
                                                  f"owner id linked to {repository}")
    entries = [line.strip() for line in repository.oidc_workflow_refs.splitlines() if line.strip()]
    if entries and not workflow_allowed(claims.job_workflow_ref, entries):
        raise ClaimRefused("job_workflow_ref", f"{claims.job_workflow_ref!r} is not a workflow allowed for "
                                               f"{repository}")
    if repository.oidc_environment and claims.environment != repository.oidc_environment:
        raise ClaimRefused("environment", f"the job must run in the environment {repository.oidc_environment!r}, "
                                          f"not {claims.environment or '(none)'!r}")
    allowed = settings.PREVIEWS_OIDC_ALLOWED_EVENTS
    if claims.event_name not in allowed:
        raise ClaimRefused("event_name", f"{claims.event_name!r} runs may not act on previews (allowed: "
                                         f"{', '.join(allowed)})")
    if pr_number is not None and claims.pr_number != pr_number:
        raise ClaimRefused("ref", f"the token is for {claims.ref!r}, not refs/pull/{pr_number}/merge")
    return repository


# Commits never change, so a merge commit's parents are remembered (per process, bounded).
_parents_cache: dict[tuple[str, str], list[str]] = {}


def check_sha(claims: GitHubClaims, head_sha: str) -> None:
    """The deploy's head_sha must be the commit the job ran for.

    For `pull_request` runs the `sha` claim is GitHub's merge commit of the PR (refs/pull/N/merge),
    whose last parent is the PR's head. So `head_sha` is accepted when it equals `sha`, or when
    GitHub says `sha` is a merge commit whose last parent is `head_sha`. When GitHub cannot be
    asked, the request is refused: an unchecked claim is no check.
    """
    if head_sha == claims.sha:
        return
    if not SHA.match(claims.sha):
        raise ClaimRefused("sha", f"{claims.sha!r} is not a commit SHA")
    if not github.is_configured():
        raise ClaimRefused("sha", f"the token is for {claims.sha[:7]}, not {head_sha[:7]}, and without GitHub access "
                                  "this service cannot check that one merges the other")
    key = (claims.repository.lower(), claims.sha)
    parents = _parents_cache.get(key)
    if parents is None:
        try:
            parents = github.commit_parents(claims.repository, claims.sha)
        except errors.NotFound:
            raise ClaimRefused("sha", f"{claims.sha[:7]} is not a commit of {claims.repository}") from None
        if len(_parents_cache) > 4096:
            _parents_cache.clear()
        _parents_cache[key] = parents
    if len(parents) < 2 or parents[-1] != head_sha:
        raise ClaimRefused("sha", f"the job ran for {claims.sha[:7]}, which is not the merge commit of head_sha "
                                  f"{head_sha[:7]}")


def remember_use(claims: GitHubClaims, operation: str) -> None:
    """Record that this token performed `operation`; a second time raises OidcError (replay).

    Rows live until the token expires (plus the leeway) and are shared by every web process.
    """
    now = timezone.now()
    leeway = timedelta(seconds=settings.PREVIEWS_OIDC_LEEWAY)
    OidcTokenUse.objects.filter(expires_at__lt=now).delete()
    try:
        with transaction.atomic():
            OidcTokenUse.objects.create(jti=claims.jti, operation=operation, expires_at=claims.expires_at + leeway)
    except IntegrityError:
        raise OidcError(f"this token was already used to {operation}; request a new one for each call",
                        claim="jti") from None


def check_fork(repository: Repository, pr_number: int | None, claims: GitHubClaims | None = None) -> None:
    """A token from a PR's run (GitHub sends them to fork PRs' runs too, in private repositories that allow it)
    meets the same fork rule as the webhook: a fork's PR acts only when the repository allows fork previews,
    and only for an author GitHub calls an owner, member or collaborator. Where the branch is comes from the
    webhooks' record, else GitHub (recorded); unknown counts as a fork. Raises ClaimRefused."""
    if pr_number is None:
        return
    from previews import forks, services  # services import this module's neighbours; late to avoid a cycle

    head, association = services.pull_origin(services.PullRequestFacts(repository, pr_number))
    # A public repository's fork PRs never get a token for a `pull_request` run (no write permission, id-token
    # included, reaches them): there a PR nobody can place is not a fork's.
    public_run = claims is not None and claims.repository_visibility == "public" and claims.event_name == "pull_request"
    if not head and public_run:
        return
    if not head and not repository.allow_fork_previews:
        raise ClaimRefused("ref", f"cannot tell whether PR #{pr_number} is from a fork (no pull_request webhook "
                                  "recorded where its branch is, and GitHub could not be asked): refused")
    refusal = forks.refusal(repository, head, association, who="a PR author")
    if refusal:
        raise ClaimRefused("ref", f"PR #{pr_number}: {refusal}")
