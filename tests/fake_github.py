"""A small, stateful fake of the GitHub REST API for driving real, unmodified PyGithub in tests.

It serves on 127.0.0.1 (a free port) from a background thread, using only the standard library::

    with FakeGitHub() as fake:
        fake.add_pull("acme/web", 7, head_sha="abc123")
        gh = Github(auth=Auth.Token("t"), base_url=fake.base_url, retry=None, timeout=5)
        gh.get_repo("acme/web").get_pull(7).create_issue_comment("hello")
        assert fake.comments("acme/web", 7)[0]["body"] == "hello"

PyGithub treats a custom ``base_url`` as the API root and appends nothing (no ``/api/v3``): requests for
``Github(base_url="http://127.0.0.1:PORT")`` go to ``/repos/...``, ``/rate_limit`` and so on, so those are the
paths served here. Absolute URLs in responses (``url``, ``issue_url``, ``Link``) must point back at this host and
port, or PyGithub refuses to follow them.

Shapes follow github.com where PyGithub reads them:

* list items of ``GET /pulls`` are the "simple" pull request (no ``merged``, ``mergeable``, ...); reading such an
  attribute on a listed ``PullRequest`` makes PyGithub fetch ``GET /pulls/{n}``, as it would against GitHub;
* pulls are listed newest first (``sort=created``, ``direction=desc``), issue comments oldest first, deployments and
  deployment statuses newest first (the ``statuses()`` helper keeps creation order);
* a ``success`` deployment status marks earlier successful, non-transient, non-production deployments of the same
  environment ``inactive`` unless ``auto_inactive`` is false.

Every non-304 authenticated response except ``GET /rate_limit`` uses one unit of the core rate limit.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import itertools
import json
import re
import socket
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple, Self
from urllib.parse import parse_qsl, urlencode, urlsplit

DOCS = "https://docs.github.com/rest"
HTML_BASE = "https://github.com"
SECONDARY_RATE_LIMIT_MESSAGE = (
    "You have exceeded a secondary rate limit. Please wait a few minutes before you try again. "
    "If you reach out to GitHub Support for help, please include the request ID FAKE."
)
PRIMARY_RATE_LIMIT_MESSAGE = (
    "API rate limit exceeded for user ID 1. If you reach out to GitHub Support for help, "
    "please include the request ID FAKE."
)
DEPLOYMENT_STATES = {"error", "failure", "inactive", "in_progress", "queued", "pending", "success"}

Json = dict[str, Any]


class Request(NamedTuple):
    """One request as received: the path has no query string; the query is parsed (last value wins)."""

    method: str
    path: str
    query: dict[str, str]


@dataclass
class _Fault:
    count: int
    status: int = 500
    seconds: float = 0.0  # for slow_next
    retry_after: int | None = None
    secondary_rate_limit: bool = False
    primary_rate_limit: bool = False
    message: str | None = None
    path_contains: str | None = None
    method: str | None = None

    def matches(self, method: str, path: str) -> bool:
        return (self.path_contains is None or self.path_contains in path) and (
            self.method is None or self.method.upper() == method
        )


class _Reply(NamedTuple):
    status: int
    body: Any = None  # a list body is paginated
    headers: dict[str, str] = {}


class _NotFound(Exception):
    pass


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _node_id(kind: str, id_: int) -> str:
    return base64.b64encode(f"0{len(kind)}:{kind}{id_}".encode()).decode()


def _fake_sha(seed: str) -> str:
    return hashlib.sha1(seed.encode()).hexdigest()


def _error(status: int, message: str, **extra: Any) -> _Reply:
    return _Reply(status, {"message": message, "documentation_url": DOCS, **extra})


def _invalid(field: str, resource: str) -> _Reply:
    return _error(422, "Validation Failed", errors=[{"resource": resource, "field": field, "code": "missing_field"}])


# (method, path pattern, handler name). "{repo}" stands for "owner/name"; named groups ending in "number"
# or "id" are integers.
_ROUTE_SPECS = [
    ("GET", "/rate_limit", "_rate_limit"),
    ("GET", "/user", "_get_user"),
    ("GET", "/repos/{repo}", "_get_repo"),
    ("GET", "/repos/{repo}/pulls", "_list_pulls"),
    ("GET", "/repos/{repo}/commits/(?P<ref>[0-9a-f]{40})", "_get_commit"),
    ("GET", "/repos/{repo}/pulls/(?P<number>\\d+)", "_get_pull"),
    ("GET", "/repos/{repo}/issues/(?P<number>\\d+)", "_get_issue"),
    ("GET", "/repos/{repo}/issues/(?P<number>\\d+)/comments", "_list_comments"),
    ("POST", "/repos/{repo}/issues/(?P<number>\\d+)/comments", "_create_comment"),
    ("GET", "/repos/{repo}/issues/comments/(?P<comment_id>\\d+)", "_get_comment"),
    ("PATCH", "/repos/{repo}/issues/comments/(?P<comment_id>\\d+)", "_edit_comment"),
    ("DELETE", "/repos/{repo}/issues/comments/(?P<comment_id>\\d+)", "_delete_comment"),
    ("POST", "/repos/{repo}/issues/comments/(?P<comment_id>\\d+)/reactions", "_create_reaction"),
    ("GET", "/repos/{repo}/issues/comments/(?P<comment_id>\\d+)/reactions", "_list_reactions"),
    ("GET", "/repos/{repo}/deployments", "_list_deployments"),
    ("POST", "/repos/{repo}/deployments", "_create_deployment"),
    ("GET", "/repos/{repo}/deployments/(?P<deployment_id>\\d+)", "_get_deployment"),
    ("GET", "/repos/{repo}/deployments/(?P<deployment_id>\\d+)/statuses", "_list_statuses"),
    ("POST", "/repos/{repo}/deployments/(?P<deployment_id>\\d+)/statuses", "_create_status"),
    ("GET", "/repos/{repo}/deployments/(?P<deployment_id>\\d+)/statuses/(?P<status_id>\\d+)", "_get_status"),
    ("POST", "/app/installations/(?P<installation_id>\\d+)/access_tokens", "_create_installation_token"),
    ("GET", "/app", "_get_app"),
]
REACTION_CONTENTS = frozenset({"+1", "-1", "laugh", "confused", "heart", "hooray", "rocket", "eyes"})
APP_TOKEN_PATH = re.compile(r"^/app(/installations/\d+/access_tokens)?$")
APP_LOGIN = "__github_app__"
_ROUTES = [
    (method, re.compile(pattern.replace("{repo}", "(?P<owner>[^/]+)/(?P<name>[^/]+)")), handler)
    for method, pattern, handler in _ROUTE_SPECS
]


class FakeGitHub:
    """Stateful fake GitHub REST API on loopback. Helpers arrange and inspect state; faults are injectable."""

    def __init__(self, *, tokens: dict[str, str] | None = None, login: str = "fake-bot") -> None:
        """``tokens`` maps accepted tokens to user logins (others get 401 "Bad credentials"); when None, any
        token is accepted and acts as ``login``."""
        self.base_url = ""
        self.rate_limit_limit = 5000
        self.rate_limit_remaining = 5000
        self.rate_limit_reset = int(time.time()) + 3600
        self._tokens = tokens
        self._login = login
        self._app: tuple[int, str, str] | None = None  # (app id, public key PEM, bot login)
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self._requests: list[Request] = []
        self._faults: list[_Fault] = []
        self._slow: list[_Fault] = []
        self._repos: dict[str, Json] = {}  # lower-case "owner/name" -> repo record
        self._comment_index: dict[int, tuple[str, int]] = {}  # comment id -> (repo key, issue number)
        self._user_ids: dict[str, int] = {}
        self._ids = {kind: itertools.count(start) for kind, start in [
            ("repo", 100_001), ("pull", 500_001), ("comment", 1_000_001),
            ("deployment", 2_000_001), ("status", 3_000_001), ("user", 9_001), ("reaction", 4_000_001),
        ]}

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> Self:
        self._stopping.clear()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-github", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._stopping.set()  # wakes handlers sleeping in slow_next
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            for conn in self._connections:  # unblock keep-alive handler threads
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- arranging and inspecting state ----------------------------------------------------------------------

    def configure_app(self, app_id: int, public_key_pem: str, bot_login: str = "previews-app[bot]") -> None:
        """Accept GitHub App authentication: JWTs signed with the key, exchanged for installation tokens that
        then act as ``bot_login``. Tokens given to the constructor stay valid."""
        with self._lock:
            self._app = (app_id, public_key_pem, bot_login)

    def add_repo(self, full_name: str) -> None:
        owner, name = full_name.split("/")
        with self._lock:
            if full_name.lower() not in self._repos:
                self._repos[full_name.lower()] = {
                    "id": next(self._ids["repo"]), "owner": owner, "name": name, "created_at": _now(),
                    "pulls": {}, "comments": {}, "deployments": {}, "statuses": {},
                }

    def add_pull(
        self,
        full_name: str,
        number: int,
        state: str = "open",
        title: str | None = None,
        author: str = "octocat",
        head_sha: str | None = None,
        head_ref: str | None = None,
        base_ref: str = "main",
        body: str | None = None,
        head_repository: str | None = None,
        author_association: str = "CONTRIBUTOR",
    ) -> Json:
        """Add (or replace) a pull request; the repository is created if needed. Returns a copy of the record.

        `head_repository`: the fork the branch is in (None: this repository; "": a deleted fork)."""
        self.add_repo(full_name)
        if head_repository:
            self.add_repo(head_repository)
        now = _now()
        with self._lock:
            pull = {
                "id": next(self._ids["pull"]), "number": number, "state": state, "merged": False,
                "title": title or f"Pull request {number}", "body": body, "user": author,
                "head_sha": head_sha or _fake_sha(f"{full_name}#{number}"), "head_ref": head_ref or f"feature-{number}",
                "base_ref": base_ref, "created_at": now, "updated_at": now,
                "closed_at": now if state == "closed" else None, "merged_at": None, "labels": [], "draft": False,
                "head_repository": head_repository, "author_association": author_association,
            }
            self._repo(full_name)["pulls"][number] = pull
            return dict(pull)

    def add_commit(self, full_name: str, sha: str, parents: list[str]) -> None:
        """A commit with its parents, e.g. the merge commit GitHub makes for a PR (parents: base, head)."""
        self.add_repo(full_name)
        with self._lock:
            self._repo(full_name).setdefault("commits", {})[sha] = list(parents)

    def repo_ids(self, full_name: str) -> tuple[int, int]:
        """(repository id, owner id) as the API reports them."""
        data = self._repo_json(self._key(full_name))
        return data["id"], data["owner"]["id"]

    def update_pull(self, full_name: str, number: int, **changes: Any) -> Json:
        """Change fields of a pull request record, e.g. ``head_sha`` after a push, or ``state="open"``."""
        with self._lock:
            pull = self._pull(full_name, number)
            unknown = set(changes) - set(pull)
            if unknown:
                raise KeyError(f"unknown pull request fields: {sorted(unknown)}")
            pull.update(changes, updated_at=_now())
            if changes.get("state") == "open":
                pull.update(closed_at=None, merged=False, merged_at=None)
            return dict(pull)

    def close_pull(self, full_name: str, number: int, merged: bool = False) -> Json:
        now = _now()
        with self._lock:
            pull = self._pull(full_name, number)
            pull.update(state="closed", merged=merged, closed_at=now, updated_at=now, merged_at=now if merged else None)
            return dict(pull)

    def add_comment(self, full_name: str, number: int, body: str, author: str = "octocat") -> Json:
        """Seed an issue comment (as if someone else wrote it). Returns a copy of the record."""
        with self._lock:
            self._pull(full_name, number)
            return dict(self._new_comment(self._key(full_name), number, body, author))

    def comments(self, full_name: str, number: int) -> list[Json]:
        """Comments on issue/pull ``number``, oldest first: dicts with id, body, user (login), created/updated_at."""
        with self._lock:
            return [dict(c) for c in self._repo(full_name)["comments"].get(number, [])]

    def reactions(self, full_name: str, comment_id: int) -> list[Json]:
        """Reactions on an issue comment, oldest first: dicts with id, content, user (login)."""
        with self._lock:
            _, comment = self._find_comment(self._key(full_name), comment_id)
            return [dict(r) for r in comment.get("reactions", [])]

    def deployments(self, full_name: str) -> list[Json]:
        """Deployments in creation order, with the create parameters (auto_merge, required_contexts, ...)."""
        with self._lock:
            return [dict(d) for d in self._repo(full_name)["deployments"].values()]

    def statuses(self, full_name: str, deployment_id: int) -> list[Json]:
        """Statuses of a deployment in creation order (the API lists them newest first)."""
        with self._lock:
            return [dict(s) for s in self._repo(full_name)["statuses"].get(deployment_id, [])]

    @property
    def requests(self) -> list[Request]:
        """Every request received, in order (including faulted, 304 and 401 ones)."""
        with self._lock:
            return list(self._requests)

    def reset_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    def count(self, method: str, path: str) -> int:
        """How many requests had exactly this method and path (query string ignored)."""
        return sum(1 for r in self.requests if r.method == method and r.path == path)

    def set_rate_limit(self, remaining: int, reset_in: int = 3600) -> None:
        """Set the core rate limit; at 0 every request except ``GET /rate_limit`` gets a primary rate limit 403
        until ``reset_in`` seconds have passed."""
        with self._lock:
            self.rate_limit_remaining = remaining
            self.rate_limit_reset = int(time.time()) + reset_in

    # -- fault injection ------------------------------------------------------------------------------------

    def fail_next(
        self,
        n: int = 1,
        status: int = 500,
        *,
        retry_after: int | None = None,
        secondary_rate_limit: bool = False,
        primary_rate_limit: bool = False,
        message: str | None = None,
        path_contains: str | None = None,
        method: str | None = None,
    ) -> None:
        """Answer the next ``n`` matching authenticated requests with ``status`` instead of serving them.

        ``secondary_rate_limit`` uses GitHub's secondary-rate-limit message (also the default for 429);
        ``primary_rate_limit`` uses the primary message and ``X-RateLimit-Remaining: 0``; ``retry_after`` adds a
        ``Retry-After`` header. ``path_contains``/``method`` restrict which requests the fault applies to.
        """
        with self._lock:
            self._faults.append(_Fault(
                n, status, retry_after=retry_after, secondary_rate_limit=secondary_rate_limit,
                primary_rate_limit=primary_rate_limit, message=message, path_contains=path_contains, method=method,
            ))

    def slow_next(
        self, n: int, seconds: float, *, path_contains: str | None = None, method: str | None = None
    ) -> None:
        """Sleep ``seconds`` before answering the next ``n`` matching requests (stop() cuts the sleep short)."""
        with self._lock:
            self._slow.append(_Fault(n, seconds=seconds, path_contains=path_contains, method=method))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()
            self._slow.clear()

    # -- request pipeline (called from handler threads) ------------------------------------------------------

    def _serve(self, h: _Handler) -> None:
        split = urlsplit(h.path)
        path = split.path.rstrip("/") or "/"
        request = Request(h.command, path, dict(parse_qsl(split.query)))
        raw = h.rfile.read(int(h.headers.get("Content-Length") or 0))
        with self._lock:
            self._requests.append(request)
            slow = self._take(self._slow, request)
        if slow is not None:
            self._stopping.wait(slow.seconds)
        with self._lock:
            status, data, headers = self._respond(request, raw, h.headers.get("Authorization"),
                                                  h.headers.get("If-None-Match"))
        h.send_response(status)
        for key, value in headers.items():
            h.send_header(key, value)
        if status != 304:
            h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        if data and status != 304:
            h.wfile.write(data)

    def _respond(
        self, request: Request, raw: bytes, authorization: str | None, if_none_match: str | None
    ) -> tuple[int, bytes, dict[str, str]]:
        login = self._authenticate(authorization, request.path)
        if isinstance(login, _Reply):
            reply, counted = login, False
        else:
            reply, counted = self._reply(request, raw, login), request.path != "/rate_limit"
        status, body, headers = reply.status, reply.body, dict(reply.headers)
        headers["Content-Type"] = "application/json; charset=utf-8"
        if isinstance(body, list):
            body, link = self._paginate(request, body)
            if link:
                headers["Link"] = link
        data = json.dumps(body, separators=(",", ":")).encode() if body is not None else b""
        if request.method == "GET" and status == 200:
            headers["ETag"] = f'W/"{hashlib.sha256(data).hexdigest()}"'
            if _etag_matches(if_none_match, headers["ETag"]):
                status, data = 304, b""
        if counted and status != 304 and self.rate_limit_remaining > 0:
            self.rate_limit_remaining -= 1
        remaining = 0 if reply.headers.get("X-RateLimit-Remaining") == "0" else self.rate_limit_remaining
        headers.update({
            "X-RateLimit-Limit": str(self.rate_limit_limit),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": str(self.rate_limit_reset),
            "X-RateLimit-Used": str(self.rate_limit_limit - remaining),
            "X-RateLimit-Resource": "core",
        })
        return status, data, headers

    def _authenticate(self, authorization: str | None, path: str = "") -> str | _Reply:
        if not authorization:
            return _error(401, "Requires authentication")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() not in ("token", "bearer") or not token.strip():
            return _error(401, "Bad credentials")
        if self._app is not None and APP_TOKEN_PATH.match(path):
            return self._authenticate_app(token.strip())
        if self._tokens is None:
            return self._login
        if token.strip() not in self._tokens:
            return _error(401, "Bad credentials")
        return self._tokens[token.strip()]

    def _authenticate_app(self, jwt_token: str) -> str | _Reply:
        """A GitHub App authenticates with a JWT it signed (RS256, issuer = its app id)."""
        import jwt

        app_id, public_key, _ = self._app
        try:
            claims = jwt.decode(jwt_token, public_key, algorithms=["RS256"])
        except jwt.PyJWTError:
            return _error(401, "A JSON web token could not be decoded")
        if str(claims.get("iss")) != str(app_id):
            return _error(401, "'Issuer' claim ('iss') must be an Integer")
        return APP_LOGIN

    def _reply(self, request: Request, raw: bytes, login: str) -> _Reply:
        if time.time() >= self.rate_limit_reset:
            self.rate_limit_remaining = self.rate_limit_limit
            self.rate_limit_reset = int(time.time()) + 3600
        if self.rate_limit_remaining <= 0 and request.path != "/rate_limit":
            return _error(403, PRIMARY_RATE_LIMIT_MESSAGE)._replace(headers={"X-RateLimit-Remaining": "0"})
        fault = self._take(self._faults, request)
        if fault is not None:
            return _fault_reply(fault)
        route = _route(request.method, request.path)
        if route is None:
            return _error(404, "Not Found")
        handler, match = route
        try:
            payload = json.loads(raw) if raw else {}
        except ValueError:
            return _error(400, "Problems parsing JSON")
        params = {k: int(v) if k.endswith(("number", "id")) else v for k, v in match.groupdict().items()}
        if "owner" in params:
            key = f"{params.pop('owner')}/{params.pop('name')}".lower()
            if key not in self._repos:
                return _error(404, "Not Found")
            params["key"] = key
        try:
            return getattr(self, handler)(request=request, payload=payload, login=login, **params)
        except _NotFound:
            return _error(404, "Not Found")

    @staticmethod
    def _take(queue: list[_Fault], request: Request) -> _Fault | None:
        for fault in queue:
            if fault.matches(request.method, request.path):
                fault.count -= 1
                if fault.count <= 0:
                    queue.remove(fault)
                return fault
        return None

    def _paginate(self, request: Request, items: list[Any]) -> tuple[list[Any], str]:
        per_page = min(max(_int(request.query.get("per_page"), 30), 1), 100)
        page = max(_int(request.query.get("page"), 1), 1)
        last = max(1, -(-len(items) // per_page))

        def link(number: int, rel: str) -> str:
            query = urlencode({**request.query, "page": str(number)})
            return f'<{self.base_url}{request.path}?{query}>; rel="{rel}"'

        links = []
        if page > 1:
            links.append(link(page - 1, "prev"))
        if page < last:
            links += [link(page + 1, "next"), link(last, "last")]
        if page > 1:
            links.append(link(1, "first"))
        return items[(page - 1) * per_page : page * per_page], ", ".join(links)

    # -- state access (caller holds the lock) ----------------------------------------------------------------

    def _key(self, full_name: str) -> str:
        key = full_name.lower()
        if key not in self._repos:
            raise KeyError(f"no repository {full_name!r}; call add_repo() first")
        return key

    def _repo(self, full_name: str) -> Json:
        return self._repos[self._key(full_name)]

    def _pull(self, full_name: str, number: int) -> Json:
        pulls = self._repo(full_name)["pulls"]
        if number not in pulls:
            raise KeyError(f"no pull request {full_name}#{number}")
        return pulls[number]

    def _new_comment(self, key: str, number: int, body: str, author: str) -> Json:
        now = _now()
        comment = {"id": next(self._ids["comment"]), "body": body, "user": author, "created_at": now, "updated_at": now}
        self._repos[key]["comments"].setdefault(number, []).append(comment)
        self._comment_index[comment["id"]] = (key, number)
        return comment

    def _find_comment(self, key: str, comment_id: int) -> tuple[int, Json]:
        if self._comment_index.get(comment_id, (None,))[0] != key:
            raise _NotFound
        number = self._comment_index[comment_id][1]
        return number, next(c for c in self._repos[key]["comments"][number] if c["id"] == comment_id)

    def _find_deployment(self, key: str, deployment_id: int) -> Json:
        deployment = self._repos[key]["deployments"].get(deployment_id)
        if deployment is None:
            raise _NotFound
        return deployment

    # -- JSON shapes -----------------------------------------------------------------------------------------

    def _full_name(self, key: str) -> str:
        return f"{self._repos[key]['owner']}/{self._repos[key]['name']}"

    def _api(self, key: str) -> str:
        return f"{self.base_url}/repos/{self._full_name(key)}"

    def _user_json(self, login: str) -> Json:
        user_id = self._user_ids.setdefault(login, next(self._ids["user"]))
        return {
            "login": login, "id": user_id, "node_id": _node_id("User", user_id),
            "type": "Bot" if login.endswith("[bot]") else "User", "site_admin": False,
            "url": f"{self.base_url}/users/{login}", "html_url": f"{HTML_BASE}/{login}",
        }

    def _head_repo_json(self, key: str, pull: Json) -> Json | None:
        head = pull.get("head_repository")
        if head is None:
            return self._repo_json(key)
        return self._repo_json(head.lower()) if head else None

    def _repo_json(self, key: str) -> Json:
        repo = self._repos[key]
        full_name = self._full_name(key)
        return {
            "id": repo["id"], "node_id": _node_id("Repository", repo["id"]), "name": repo["name"],
            "full_name": full_name, "owner": self._user_json(repo["owner"]), "private": False,
            "html_url": f"{HTML_BASE}/{full_name}", "url": self._api(key), "default_branch": "main",
            "created_at": repo["created_at"], "updated_at": repo["created_at"],
            "pulls_url": f"{self._api(key)}/pulls{{/number}}", "issues_url": f"{self._api(key)}/issues{{/number}}",
            "deployments_url": f"{self._api(key)}/deployments",
        }

    def _pull_json(self, key: str, pull: Json, full: bool) -> Json:
        api, n = self._api(key), pull["number"]
        repo = self._repo_json(key)
        owner = self._repos[key]["owner"]
        data = {
            "url": f"{api}/pulls/{n}", "id": pull["id"], "node_id": _node_id("PullRequest", pull["id"]),
            "html_url": f"{HTML_BASE}/{self._full_name(key)}/pull/{n}", "issue_url": f"{api}/issues/{n}",
            "comments_url": f"{api}/issues/{n}/comments", "statuses_url": f"{api}/statuses/{pull['head_sha']}",
            "number": n, "state": pull["state"], "locked": False, "title": pull["title"],
            "user": self._user_json(pull["user"]), "body": pull["body"],
            "labels": [{"id": 7_000_000 + i, "name": label, "color": "ededed", "default": False}
                       for i, label in enumerate(pull["labels"])], "draft": pull["draft"],
            "created_at": pull["created_at"], "updated_at": pull["updated_at"], "closed_at": pull["closed_at"],
            "merged_at": pull["merged_at"], "author_association": pull.get("author_association", "CONTRIBUTOR"),
            "head": {"label": f"{owner}:{pull['head_ref']}", "ref": pull["head_ref"], "sha": pull["head_sha"],
                     "user": self._user_json(owner), "repo": self._head_repo_json(key, pull)},
            "base": {"label": f"{owner}:{pull['base_ref']}", "ref": pull["base_ref"],
                     "sha": _fake_sha(f"{key}@{pull['base_ref']}"), "user": self._user_json(owner), "repo": repo},
        }
        if full:
            data.update(merged=pull["merged"], mergeable=None if pull["merged"] else True, comments=len(
                self._repos[key]["comments"].get(n, [])), merged_by=self._user_json(owner) if pull["merged"] else None)
        return data

    def _comment_json(self, key: str, number: int, comment: Json) -> Json:
        api = self._api(key)
        return {
            "id": comment["id"], "node_id": _node_id("IssueComment", comment["id"]),
            "url": f"{api}/issues/comments/{comment['id']}", "issue_url": f"{api}/issues/{number}",
            "html_url": f"{HTML_BASE}/{self._full_name(key)}/pull/{number}#issuecomment-{comment['id']}",
            "body": comment["body"], "user": self._user_json(comment["user"]), "author_association": "NONE",
            "created_at": comment["created_at"], "updated_at": comment["updated_at"],
        }

    def _deployment_json(self, key: str, deployment: Json) -> Json:
        url = f"{self._api(key)}/deployments/{deployment['id']}"
        return {
            "url": url, "id": deployment["id"], "node_id": _node_id("Deployment", deployment["id"]),
            "sha": deployment["sha"], "ref": deployment["ref"], "task": deployment["task"],
            "payload": deployment["payload"], "original_environment": deployment["environment"],
            "environment": deployment["environment"], "description": deployment["description"],
            "creator": self._user_json(deployment["creator"]), "created_at": deployment["created_at"],
            "updated_at": deployment["updated_at"], "statuses_url": f"{url}/statuses",
            "repository_url": self._api(key), "transient_environment": deployment["transient_environment"],
            "production_environment": deployment["production_environment"],
        }

    def _status_json(self, key: str, deployment_id: int, status: Json) -> Json:
        deployment_url = f"{self._api(key)}/deployments/{deployment_id}"
        return {
            "url": f"{deployment_url}/statuses/{status['id']}", "id": status["id"],
            "node_id": _node_id("DeploymentStatus", status["id"]), "state": status["state"],
            "creator": self._user_json(status["creator"]), "description": status["description"],
            "environment": status["environment"], "target_url": status["log_url"], "log_url": status["log_url"],
            "environment_url": status["environment_url"], "created_at": status["created_at"],
            "updated_at": status["created_at"], "deployment_url": deployment_url, "repository_url": self._api(key),
        }

    # -- endpoint handlers (caller holds the lock) -----------------------------------------------------------

    def _create_installation_token(self, login: str, installation_id: int, **_: Any) -> _Reply:
        if login != APP_LOGIN:
            return _error(401, "A JSON web token could not be decoded")
        token = f"ghs_{hashlib.sha256(str(next(self._ids['user'])).encode()).hexdigest()[:36]}"
        if self._tokens is None:
            self._tokens = {}
        self._tokens[token] = self._app[2]
        expires = datetime.fromtimestamp(time.time() + 3600, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return _Reply(201, {"token": token, "expires_at": expires, "permissions": {"pull_requests": "write",
                                                                                   "deployments": "write"},
                            "repository_selection": "all"})

    def _get_app(self, login: str, **_: Any) -> _Reply:
        """The authenticated App (JWT only), as GitHub describes it: its bot writes as ``<slug>[bot]``."""
        if login != APP_LOGIN:
            return _error(401, "A JSON web token could not be decoded")
        app_id, _, bot_login = self._app
        slug = bot_login.removesuffix("[bot]")
        return _Reply(200, {"id": app_id, "slug": slug, "name": slug, "node_id": _node_id("App", app_id),
                            "owner": self._user_json("acme"), "html_url": f"{HTML_BASE}/apps/{slug}",
                            "permissions": {"pull_requests": "write", "deployments": "write"}, "events": []})

    def _rate_limit(self, **_: Any) -> _Reply:
        core = {"limit": self.rate_limit_limit, "remaining": self.rate_limit_remaining,
                "reset": self.rate_limit_reset, "used": self.rate_limit_limit - self.rate_limit_remaining,
                "resource": "core"}
        other = {"limit": 5000, "remaining": 5000, "reset": self.rate_limit_reset, "used": 0}
        resources = {"core": core, "search": {**other, "limit": 30, "remaining": 30, "resource": "search"},
                     "graphql": {**other, "resource": "graphql"}}
        return _Reply(200, {"resources": resources, "rate": core})

    def _get_user(self, login: str, **_: Any) -> _Reply:
        return _Reply(200, self._user_json(login))

    def _get_repo(self, key: str, **_: Any) -> _Reply:
        return _Reply(200, self._repo_json(key))

    def _get_commit(self, key: str, ref: str, **_: Any) -> _Reply:
        parents = self._repos[key].get("commits", {}).get(ref)
        if parents is None:
            return _error(422, f"No commit found for SHA: {ref}")
        api = self._api(key)
        return _Reply(200, {
            "sha": ref, "node_id": _node_id("Commit", 1), "url": f"{api}/commits/{ref}",
            "html_url": f"{HTML_BASE}/{self._full_name(key)}/commit/{ref}",
            "commit": {"message": "Merge", "tree": {"sha": _fake_sha(ref), "url": ""}},
            "parents": [{"sha": p, "url": f"{api}/commits/{p}"} for p in parents],
        })

    def _list_pulls(self, key: str, request: Request, **_: Any) -> _Reply:
        state = request.query.get("state", "open")
        if state not in ("open", "closed", "all"):
            return _error(422, "Validation Failed")
        pulls = [p for p in self._repos[key]["pulls"].values() if state in ("all", p["state"])]
        sort_key = "updated_at" if request.query.get("sort") == "updated" else "created_at"
        pulls.sort(key=lambda p: (p[sort_key], p["number"]), reverse=request.query.get("direction") != "asc")
        return _Reply(200, [self._pull_json(key, p, full=False) for p in pulls])

    def _get_pull(self, key: str, number: int, **_: Any) -> _Reply:
        pull = self._repos[key]["pulls"].get(number)
        if pull is None:
            raise _NotFound
        return _Reply(200, self._pull_json(key, pull, full=True))

    def _get_issue(self, key: str, number: int, **_: Any) -> _Reply:
        pull = self._repos[key]["pulls"].get(number)
        if pull is None:
            raise _NotFound
        data = self._pull_json(key, pull, full=False)
        api = self._api(key)
        return _Reply(200, {
            **{k: data[k] for k in ("id", "node_id", "number", "state", "title", "user", "body", "labels", "locked",
                                     "comments_url", "created_at", "updated_at", "closed_at", "author_association")},
            "url": f"{api}/issues/{number}", "html_url": data["html_url"], "repository_url": api,
            "comments": len(self._repos[key]["comments"].get(number, [])),
            "pull_request": {"url": data["url"], "html_url": data["html_url"], "merged_at": pull["merged_at"]},
        })

    def _list_comments(self, key: str, number: int, request: Request, **_: Any) -> _Reply:
        if number not in self._repos[key]["pulls"]:
            raise _NotFound
        since = request.query.get("since", "")
        comments = [c for c in self._repos[key]["comments"].get(number, []) if c["updated_at"] >= since]
        return _Reply(200, [self._comment_json(key, number, c) for c in comments])

    def _create_comment(self, key: str, number: int, payload: Json, login: str, **_: Any) -> _Reply:
        if number not in self._repos[key]["pulls"]:
            raise _NotFound
        if not isinstance(payload.get("body"), str):
            return _invalid("body", "IssueComment")
        comment = self._new_comment(key, number, payload["body"], login)
        return _Reply(201, self._comment_json(key, number, comment))

    def _get_comment(self, key: str, comment_id: int, **_: Any) -> _Reply:
        number, comment = self._find_comment(key, comment_id)
        return _Reply(200, self._comment_json(key, number, comment))

    def _edit_comment(self, key: str, comment_id: int, payload: Json, **_: Any) -> _Reply:
        number, comment = self._find_comment(key, comment_id)
        if not isinstance(payload.get("body"), str):
            return _invalid("body", "IssueComment")
        comment.update(body=payload["body"], updated_at=_now())
        return _Reply(200, self._comment_json(key, number, comment))

    def _create_reaction(self, key: str, comment_id: int, payload: Json, login: str, **_: Any) -> _Reply:
        _, comment = self._find_comment(key, comment_id)
        content = payload.get("content")
        if content not in REACTION_CONTENTS:
            return _invalid("content", "Reaction")
        reactions = comment.setdefault("reactions", [])
        for reaction in reactions:  # GitHub answers 200 with the existing reaction for a repeat
            if reaction["user"] == login and reaction["content"] == content:
                return _Reply(200, self._reaction_json(reaction))
        reaction = {"id": next(self._ids["reaction"]), "content": content, "user": login, "created_at": _now()}
        reactions.append(reaction)
        return _Reply(201, self._reaction_json(reaction))

    def _list_reactions(self, key: str, comment_id: int, **_: Any) -> _Reply:
        _, comment = self._find_comment(key, comment_id)
        return _Reply(200, [self._reaction_json(r) for r in comment.get("reactions", [])])

    def _reaction_json(self, reaction: Json) -> Json:
        return {"id": reaction["id"], "node_id": _node_id("Reaction", reaction["id"]), "content": reaction["content"],
                "user": self._user_json(reaction["user"]), "created_at": reaction["created_at"]}

    def _delete_comment(self, key: str, comment_id: int, **_: Any) -> _Reply:
        number, comment = self._find_comment(key, comment_id)
        self._repos[key]["comments"][number].remove(comment)
        del self._comment_index[comment_id]
        return _Reply(204)

    def _list_deployments(self, key: str, request: Request, **_: Any) -> _Reply:
        filters = {k: v for k, v in request.query.items() if k in ("sha", "ref", "task", "environment")}
        deployments = [d for d in self._repos[key]["deployments"].values()
                       if all(d[k] == v for k, v in filters.items())]
        return _Reply(200, [self._deployment_json(key, d) for d in reversed(deployments)])

    def _create_deployment(self, key: str, payload: Json, login: str, **_: Any) -> _Reply:
        ref = payload.get("ref")
        if not isinstance(ref, str) or not ref:
            return _invalid("ref", "Deployment")
        environment = payload.get("environment", "production")
        now = _now()
        deployment = {
            "id": next(self._ids["deployment"]), "sha": self._resolve_ref(key, ref), "ref": ref,
            "task": payload.get("task", "deploy"), "environment": environment,
            "transient_environment": bool(payload.get("transient_environment", False)),
            "production_environment": bool(payload.get("production_environment", environment == "production")),
            "auto_merge": payload.get("auto_merge", True), "required_contexts": payload.get("required_contexts"),
            "payload": payload.get("payload", {}), "description": payload.get("description"),
            "creator": login, "created_at": now, "updated_at": now,
        }
        self._repos[key]["deployments"][deployment["id"]] = deployment
        return _Reply(201, self._deployment_json(key, deployment))

    def _resolve_ref(self, key: str, ref: str) -> str:
        if re.fullmatch(r"[0-9a-f]{40}", ref):
            return ref
        for pull in self._repos[key]["pulls"].values():
            if ref in (pull["head_ref"], pull["head_sha"]):
                return pull["head_sha"]
        return _fake_sha(f"{key}@{ref}")

    def _get_deployment(self, key: str, deployment_id: int, **_: Any) -> _Reply:
        return _Reply(200, self._deployment_json(key, self._find_deployment(key, deployment_id)))

    def _list_statuses(self, key: str, deployment_id: int, **_: Any) -> _Reply:
        self._find_deployment(key, deployment_id)
        statuses = self._repos[key]["statuses"].get(deployment_id, [])
        return _Reply(200, [self._status_json(key, deployment_id, s) for s in reversed(statuses)])

    def _get_status(self, key: str, deployment_id: int, status_id: int, **_: Any) -> _Reply:
        self._find_deployment(key, deployment_id)
        for status in self._repos[key]["statuses"].get(deployment_id, []):
            if status["id"] == status_id:
                return _Reply(200, self._status_json(key, deployment_id, status))
        raise _NotFound

    def _create_status(self, key: str, deployment_id: int, payload: Json, login: str, **_: Any) -> _Reply:
        deployment = self._find_deployment(key, deployment_id)
        state = payload.get("state")
        if state not in DEPLOYMENT_STATES:
            return _invalid("state", "DeploymentStatus")
        environment = payload.get("environment") or deployment["environment"]
        status = self._add_status(key, deployment_id, state, login, environment=environment,
                                  environment_url=payload.get("environment_url", ""),
                                  log_url=payload.get("log_url") or payload.get("target_url", ""),
                                  description=payload.get("description", ""))
        if state == "success" and payload.get("auto_inactive", True):
            for other in self._repos[key]["deployments"].values():
                history = self._repos[key]["statuses"].get(other["id"], [])
                if (other["id"] < deployment_id and other["environment"] == environment and history
                        and history[-1]["state"] == "success" and not other["transient_environment"]
                        and not other["production_environment"]):
                    self._add_status(key, other["id"], "inactive", login, environment=other["environment"],
                                     environment_url="", log_url="", description="")
        return _Reply(201, self._status_json(key, deployment_id, status))

    def _add_status(self, key: str, deployment_id: int, state: str, login: str, **fields: str) -> Json:
        status = {"id": next(self._ids["status"]), "state": state, **fields, "creator": login, "created_at": _now()}
        self._repos[key]["statuses"].setdefault(deployment_id, []).append(status)
        return status


def _route(method: str, path: str) -> tuple[str, re.Match[str]] | None:
    for route_method, pattern, handler in _ROUTES:
        match = pattern.fullmatch(path)
        if match and route_method == method:
            return handler, match
    return None


def _fault_reply(fault: _Fault) -> _Reply:
    headers = {} if fault.retry_after is None else {"Retry-After": str(fault.retry_after)}
    if fault.primary_rate_limit:
        message = PRIMARY_RATE_LIMIT_MESSAGE
        headers["X-RateLimit-Remaining"] = "0"
    elif fault.secondary_rate_limit or fault.status == 429:
        message = SECONDARY_RATE_LIMIT_MESSAGE
    else:
        message = HTTPStatus(fault.status).phrase
    return _error(fault.status, fault.message or message)._replace(headers=headers)


def _etag_matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    candidates = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return "*" in candidates or etag.removeprefix("W/") in candidates


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    fake: FakeGitHub

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # the client gave up (e.g. timed out on a slow response)
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.fake._lock:
            self.server.fake._connections.add(self.connection)

    def finish(self) -> None:
        with self.server.fake._lock:
            self.server.fake._connections.discard(self.connection)
        super().finish()

    def _serve(self) -> None:
        self.server.fake._serve(self)

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:
        pass
