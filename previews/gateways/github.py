"""The GitHub gateway: the only module that imports PyGithub.

Every read returns a typed result in which "unknown" is distinct from
"closed": errors, 404s, rate limits and timeouts are unknown, and callers that
delete things (the reaper) act only on known answers. Rate-limit headers are
recorded, and after a 403/429 with Retry-After (or an exhausted limit) calls
are not even attempted until the reset time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import requests
from django.conf import settings
from django.utils import timezone
from github import Auth, Github, GithubException, GithubIntegration

from previews.gateways import errors
from previews.models import GitHubState

COMMENT_MARKER = "<!-- pr-previews:status-comment -->"
BACKOFF_KEY = "backoff"
RATE_LIMIT_KEY = "rate_limit"
MAX_LIST_PAGES = 50  # 5000 open PRs: a runaway pagination stops here (and counts as unknown)


@dataclass(frozen=True)
class OpenPulls:
    """The open PR numbers of a repository, or `known=False` with the reason it could not be learned."""

    known: bool
    numbers: frozenset[int] = frozenset()
    reason: str = ""
    api_calls: int = 0
    not_modified: int = 0  # pages answered 304 from our ETag cache

    @property
    def open_numbers(self) -> frozenset[int] | None:
        """The open numbers when known, None when unknown: what the reaper plans with."""
        return self.numbers if self.known else None

    def is_open(self, number: int) -> bool | None:
        """True/False when known; None when unknown (never read None as closed)."""
        return (number in self.numbers) if self.known else None


@dataclass(frozen=True)
class PullState:
    state: str  # "open", "closed", "merged" or "unknown"
    title: str = ""
    author: str = ""
    head_sha: str = ""
    reason: str = ""
    draft: bool = False
    labels: tuple[str, ...] = ()
    head_repository: str = ""  # owner/name of the branch's repository; "" for a deleted fork
    author_association: str = ""

    @property
    def known(self) -> bool:
        return self.state != "unknown"


@dataclass
class Deployment:
    id: int
    environment: str


@dataclass
class _Page:
    numbers: list[int] = field(default_factory=list)
    next_page: int | None = None


# --- client -------------------------------------------------------------------------------


def is_configured() -> bool:
    return bool(settings.GITHUB_TOKEN or (settings.GITHUB_APP_ID and settings.GITHUB_APP_PRIVATE_KEY))


_app_auth_cache: dict[tuple, Auth.AppInstallationAuth] = {}


def _auth() -> Auth.Auth:
    if settings.GITHUB_TOKEN:
        return Auth.Token(settings.GITHUB_TOKEN)
    # One installation auth per process and configuration: it keeps its installation token until
    # shortly before it expires, instead of minting a new one for every call.
    cache_key = (settings.GITHUB_API_URL, settings.GITHUB_APP_ID, settings.GITHUB_APP_INSTALLATION_ID,
                 settings.GITHUB_APP_PRIVATE_KEY)
    if cache_key not in _app_auth_cache:
        key = settings.GITHUB_APP_PRIVATE_KEY
        if not key.lstrip().startswith("-----BEGIN") and Path(key).is_file():
            key = Path(key).read_text()
        _app_auth_cache.clear()
        _app_auth_cache[cache_key] = Auth.AppAuth(int(settings.GITHUB_APP_ID), key).get_installation_auth(
            int(settings.GITHUB_APP_INSTALLATION_ID))
    return _app_auth_cache[cache_key]


_own_login_cache: dict[tuple, str] = {}


def own_login() -> str:
    """The login our comments are written by: the token's user, or the App's bot (`<slug>[bot]`).

    Asked of GitHub once per process and configuration. Only comments by this login are ever edited, so a
    comment someone else wrote with our marker in it is never taken over.
    """
    cache_key = (settings.GITHUB_API_URL, settings.GITHUB_TOKEN, settings.GITHUB_APP_ID)
    if cache_key not in _own_login_cache:
        if settings.GITHUB_TOKEN:
            login = _client().get_user().login
        else:
            key = settings.GITHUB_APP_PRIVATE_KEY
            if not key.lstrip().startswith("-----BEGIN") and Path(key).is_file():
                key = Path(key).read_text()
            integration = GithubIntegration(auth=Auth.AppAuth(int(settings.GITHUB_APP_ID), key),
                                            base_url=settings.GITHUB_API_URL, timeout=settings.GITHUB_TIMEOUT,
                                            retry=None)
            login = f"{integration.get_app().slug}[bot]"
        _own_login_cache.clear()
        _own_login_cache[cache_key] = login
    return _own_login_cache[cache_key]


def _ours(comment, login: str) -> bool:
    return COMMENT_MARKER in (comment.body or "") and comment.user is not None and comment.user.login == login


def _client(timeout: float | None = None) -> Github:
    if not is_configured():
        raise errors.Unavailable("GitHub is not configured (set GITHUB_TOKEN or the GITHUB_APP_* settings)")
    # retry=None: our callers decide about retries; PyGithub's own would hold a task for minutes.
    return Github(auth=_auth(), base_url=settings.GITHUB_API_URL, timeout=timeout or settings.GITHUB_TIMEOUT,
                  retry=None,
                  per_page=100, seconds_between_requests=None, seconds_between_writes=None, lazy=True)


def _state(key: str) -> GitHubState | None:
    return GitHubState.objects.filter(key=key).first()


def _put_state(key: str, **fields) -> None:
    GitHubState.objects.update_or_create(key=key, defaults=fields)


def backoff_until() -> datetime | None:
    row = _state(BACKOFF_KEY)
    if row is None or row.until is None or row.until <= timezone.now():
        return None
    return row.until


def rate_limit_remaining() -> int | None:
    row = _state(RATE_LIMIT_KEY)
    return None if row is None else row.data.get("remaining")


def _record_rate_limit(headers: dict) -> None:
    lowered = {k.lower(): v for k, v in (headers or {}).items()}
    remaining = lowered.get("x-ratelimit-remaining")
    if remaining is None:
        return
    data = {"remaining": int(remaining), "limit": int(lowered.get("x-ratelimit-limit", 0) or 0),
            "reset": int(lowered.get("x-ratelimit-reset", 0) or 0)}
    _put_state(RATE_LIMIT_KEY, data=data)
    if data["remaining"] == 0 and data["reset"]:
        _put_state(BACKOFF_KEY, until=datetime.fromtimestamp(data["reset"], tz=UTC))


def _retry_after(status: int, headers: dict, message: str) -> int | None:
    lowered = {k.lower(): v for k, v in (headers or {}).items()}
    if "retry-after" in lowered and str(lowered["retry-after"]).isdigit():
        return int(lowered["retry-after"])
    if status in (403, 429) and lowered.get("x-ratelimit-remaining") == "0" and lowered.get("x-ratelimit-reset"):
        return max(1, int(lowered["x-ratelimit-reset"]) - int(timezone.now().timestamp()))
    if status == 429 or (status == 403 and "rate limit" in message.lower()):
        return 60  # GitHub's advice for a secondary limit without Retry-After: wait at least a minute
    return None


def _guard(action: str) -> None:
    """Refuse at once, without calling GitHub, while backing off after a rate limit."""
    until = backoff_until()
    if until is not None:
        raise errors.Unavailable(f"{action}: waiting for GitHub's rate limit until {until:%H:%M:%S} UTC",
                                 status=429, retry_after=int((until - timezone.now()).total_seconds()) + 1)


def _error(action: str, exc: Exception, timeout: float | None = None) -> errors.GatewayError:
    """PyGithub's (or the transport's) exception as one of ours: a rate limit, a timeout, no connection, 429 or
    5xx is Unavailable; 404 NotFound, 409 Conflict; any other answer a GatewayError with its status."""
    if isinstance(exc, GithubException):
        message = exc.data.get("message", "") if isinstance(exc.data, dict) else str(exc.data or "")
        retry_after = _retry_after(exc.status, exc.headers or {}, message)
        _record_rate_limit(exc.headers or {})
        if retry_after:
            _put_state(BACKOFF_KEY, until=timezone.now() + timedelta(seconds=retry_after))
        cls = errors.Unavailable if retry_after else errors.for_status(exc.status)
        return cls(f"{action}: GitHub answered {exc.status} {message}".strip(), status=exc.status,
                   retry_after=retry_after)
    if isinstance(exc, requests.exceptions.Timeout):
        return errors.Unavailable(f"{action}: GitHub did not answer within {timeout or settings.GITHUB_TIMEOUT}s")
    return errors.Unavailable(f"{action}: GitHub could not be reached ({exc.__class__.__name__}: {exc})")


FAILURES = (GithubException, requests.exceptions.RequestException, OSError, ValueError, KeyError, TypeError)


# --- reads --------------------------------------------------------------------------------


def open_pull_numbers(full_name: str) -> OpenPulls:
    """Open PR numbers from the paginated `pulls?state=open&per_page=100` listing.

    Each page is requested with the ETag of its last answer, so an unchanged
    listing is answered 304 and costs no rate limit. Any failure: unknown.
    """
    calls = not_modified = 0
    try:
        _guard(f"list open PRs of {full_name}")
        gh = _client()
        numbers: list[int] = []
        page = 1
        while page is not None:
            if page > MAX_LIST_PAGES:
                return OpenPulls(known=False, reason=f"more than {MAX_LIST_PAGES} pages of open PRs",
                                 api_calls=calls)
            key = f"pulls:{full_name.lower()}:{page}"
            cached = _state(key)
            headers = {"If-None-Match": cached.etag} if cached and cached.etag else {}
            status, response_headers, body = gh.requester.requestJson(
                "GET", f"/repos/{full_name}/pulls", parameters={"state": "open", "per_page": 100, "page": page},
                headers=headers)
            calls += 1
            _record_rate_limit(response_headers)
            if status == 304 and cached is not None:
                not_modified += 1
                result = _Page(cached.data["numbers"], cached.data.get("next_page"))
            elif status == 200:
                result = _Page([int(p["number"]) for p in json.loads(body)], _next_page(response_headers))
                etag = {k.lower(): v for k, v in response_headers.items()}.get("etag", "")
                _put_state(key, etag=etag, data={"numbers": result.numbers, "next_page": result.next_page})
            else:
                message = _message(body)
                raise GithubException(status, {"message": message}, response_headers)
            numbers.extend(result.numbers)
            page = result.next_page
    except errors.GatewayError as exc:
        return OpenPulls(known=False, reason=str(exc), api_calls=calls)
    except FAILURES as exc:
        return OpenPulls(known=False, reason=str(_error(f"list open PRs of {full_name}", exc)),
                         api_calls=calls)
    return OpenPulls(known=True, numbers=frozenset(numbers), api_calls=calls, not_modified=not_modified)


def _message(body: str) -> str:
    try:
        data = json.loads(body)
    except (TypeError, ValueError):
        return ""
    return str(data.get("message", "")) if isinstance(data, dict) else ""


def _next_page(headers: dict) -> int | None:
    link = {k.lower(): v for k, v in headers.items()}.get("link", "")
    for part in link.split(","):
        if 'rel="next"' in part:
            url = part.split(";")[0].strip().strip("<>")
            for param in url.split("?", 1)[-1].split("&"):
                name, _, value = param.partition("=")
                if name == "page" and value.isdigit():
                    return int(value)
    return None


def pull_state(full_name: str, number: int, timeout: float | None = None) -> PullState:
    """The PR's state and head, asked of GitHub (within `timeout` seconds per connect and read; default
    GITHUB_TIMEOUT)."""
    try:
        _guard(f"read PR #{number} of {full_name}")
        pull = _client(timeout).get_repo(full_name).get_pull(number)
        state = "merged" if pull.merged else pull.state
        head_repo = pull.raw_data.get("head", {}).get("repo") if isinstance(pull.raw_data.get("head"), dict) else None
        association = pull.raw_data.get("author_association")
        return PullState(state=state, title=pull.title or "", author=pull.user.login if pull.user else "",
                         head_sha=pull.head.sha if pull.head else "", draft=bool(pull.draft),
                         labels=tuple(label.name for label in pull.labels),
                         head_repository=str(head_repo.get("full_name") or "") if isinstance(head_repo, dict) else "",
                         author_association=association[:30] if isinstance(association, str) else "")
    except errors.GatewayError as exc:
        return PullState(state="unknown", reason=str(exc))
    except FAILURES as exc:
        return PullState(state="unknown", reason=str(_error(f"read PR #{number} of {full_name}", exc, timeout)))


def commit_parents(full_name: str, sha: str) -> list[str]:
    """The parent SHAs of a commit (immutable). Raises errors.NotFound when there is no such commit (GitHub
    answers 404, or 422 for a SHA it cannot resolve), another errors.GatewayError when GitHub cannot say."""
    action = f"read commit {sha[:7]} of {full_name}"
    try:
        _guard(action)
        return [parent.sha for parent in _client().get_repo(full_name).get_commit(sha).parents]
    except errors.GatewayError:
        raise
    except FAILURES as exc:
        error = _error(action, exc)
        if error.status == 422:
            error = errors.NotFound(str(error), status=422)
        raise error from exc


def repository_ids(full_name: str) -> tuple[int, int]:
    """GitHub's immutable (repository id, owner id). Raises errors.GatewayError."""
    action = f"read repository {full_name}"
    try:
        _guard(action)
        repo = _client().get_repo(full_name)  # lazy: the first attribute read fetches it
        return int(repo.id), int(repo.owner.id)
    except errors.GatewayError:
        raise
    except FAILURES as exc:
        raise _error(action, exc) from exc


# --- writes: each raises errors.GatewayError on failure --------------------------------------------


def upsert_comment(full_name: str, number: int, body: str, known_comment_id: int | None = None) -> int:
    """Create or edit our one comment on the PR (found by a hidden marker, and written by us). Returns its id."""
    action = f"comment on PR #{number} of {full_name}"
    text = f"{COMMENT_MARKER}\n{body}"
    try:
        _guard(action)
        login = own_login()
        repo = _client().get_repo(full_name)
        if known_comment_id:
            try:
                comment = repo.get_issue(number).get_comment(known_comment_id)
                if _ours(comment, login):
                    if comment.body != text:
                        comment.edit(text)
                    return comment.id
            except GithubException as exc:
                if exc.status != 404:
                    raise
        issue = repo.get_issue(number)
        for comment in issue.get_comments():
            if _ours(comment, login):
                if comment.body != text:
                    comment.edit(text)
                return comment.id
        return issue.create_comment(text).id
    except errors.GatewayError:
        raise
    except FAILURES as exc:
        raise _error(action, exc) from exc


def create_deployment(full_name: str, sha: str, environment: str, description: str) -> Deployment:
    action = f"create a deployment of {sha[:7]} in {full_name}"
    try:
        _guard(action)
        deployment = _client().get_repo(full_name).create_deployment(
            ref=sha, environment=environment, description=description[:140], auto_merge=False,
            required_contexts=[], transient_environment=True, production_environment=False)
        return Deployment(id=deployment.id, environment=environment)
    except errors.GatewayError:
        raise
    except FAILURES as exc:
        raise _error(action, exc) from exc


def create_deployment_status(full_name: str, deployment_id: int, state: str, *, description: str = "",
                             environment_url: str = "", log_url: str = "") -> None:
    action = f"set deployment {deployment_id} of {full_name} to {state}"
    try:
        _guard(action)
        repo = _client().get_repo(full_name)
        deployment = repo.get_deployment(deployment_id)
        kwargs = {"description": description[:140]}
        if environment_url:
            kwargs["environment_url"] = environment_url
        if log_url:
            kwargs["target_url"] = log_url
        deployment.create_status(state, **kwargs)
    except errors.GatewayError:
        raise
    except FAILURES as exc:
        raise _error(action, exc) from exc


REACTIONS = frozenset({"+1", "-1", "laugh", "confused", "heart", "hooray", "rocket", "eyes"})


def add_reaction(full_name: str, number: int, comment_id: int, content: str) -> None:
    """React to an issue comment (the answer to a /preview command)."""
    action = f"react {content} to comment {comment_id} in {full_name}"
    if content not in REACTIONS:
        raise ValueError(f"{content!r} is not a GitHub reaction")
    try:
        _guard(action)
        _client().get_repo(full_name).get_issue(number).get_comment(comment_id).create_reaction(content)
    except errors.GatewayError:
        raise
    except FAILURES as exc:
        raise _error(action, exc) from exc


def create_comment(full_name: str, number: int, body: str) -> int:
    """A new, plain comment on the PR (a short reply to a /preview command); not the sticky comment."""
    action = f"reply on PR #{number} of {full_name}"
    try:
        _guard(action)
        return _client().get_repo(full_name).get_issue(number).create_comment(body).id
    except errors.GatewayError:
        raise
    except FAILURES as exc:
        raise _error(action, exc) from exc
