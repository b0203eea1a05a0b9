"""Real, unmodified PyGithub against tests.fake_github.FakeGitHub (no database, no network beyond loopback)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import requests
from github import Auth, Github, GithubException, GithubRetry
from github.GithubException import BadCredentialsException, RateLimitExceededException, UnknownObjectException
from github.Repository import Repository

from tests.fake_github import FakeGitHub

REPO = "acme/web"


@pytest.fixture
def fake() -> Iterator[FakeGitHub]:
    with FakeGitHub() as server:
        server.add_repo(REPO)
        yield server


def client(fake: FakeGitHub, token: str = "t", **kwargs: object) -> Github:
    """A PyGithub client with its own retries and request pacing switched off, so faults surface as they are."""
    options: dict = {"retry": None, "timeout": 5, "seconds_between_requests": None, "seconds_between_writes": None}
    return Github(auth=Auth.Token(token), base_url=fake.base_url, **{**options, **kwargs})


@pytest.fixture
def gh(fake: FakeGitHub) -> Iterator[Github]:
    g = client(fake)
    yield g
    g.close()


@pytest.fixture
def repo(gh: Github, fake: FakeGitHub) -> Repository:
    r = gh.get_repo(REPO)
    fake.reset_requests()
    return r


def api(fake: FakeGitHub, path: str, **headers: str) -> requests.Response:
    return requests.get(f"{fake.base_url}{path}", headers={"Authorization": "token t", **headers}, timeout=5)


def test_custom_base_url_is_used_as_api_root_without_api_v3_prefix(fake: FakeGitHub, gh: Github) -> None:
    gh.get_repo(REPO)

    assert [(r.method, r.path) for r in fake.requests] == [("GET", "/repos/acme/web")]


def test_listing_250_open_pulls_with_per_page_100_takes_three_list_calls(fake: FakeGitHub) -> None:
    for number in range(1, 251):
        fake.add_pull(REPO, number)
    fake.add_pull(REPO, 251, state="closed")
    g = client(fake, per_page=100)
    pulls_repo = g.get_repo(REPO)

    numbers = [p.number for p in pulls_repo.get_pulls(state="open")]

    assert sorted(numbers) == list(range(1, 251))
    assert fake.count("GET", "/repos/acme/web/pulls") == 3
    assert [r.query["page"] for r in fake.requests if r.path.endswith("/pulls") and "page" in r.query] == ["2", "3"]


def test_link_header_on_a_middle_page_has_prev_next_last_and_first(fake: FakeGitHub) -> None:
    for number in range(1, 11):
        fake.add_pull(REPO, number)

    response = api(fake, "/repos/acme/web/pulls?state=open&per_page=3&page=2")

    assert set(response.links) == {"prev", "next", "last", "first"}
    assert response.links["last"]["url"] == f"{fake.base_url}/repos/acme/web/pulls?state=open&per_page=3&page=4"
    assert len(response.json()) == 3


def test_repeated_listing_with_previous_etag_gets_304_without_using_rate_limit(fake: FakeGitHub) -> None:
    fake.add_pull(REPO, 1)
    first = api(fake, "/repos/acme/web/pulls?state=open")
    remaining = fake.rate_limit_remaining

    again = api(fake, "/repos/acme/web/pulls?state=open", **{"If-None-Match": first.headers["ETag"]})

    assert again.status_code == 304
    assert again.content == b""
    assert fake.rate_limit_remaining == remaining
    assert again.headers["X-RateLimit-Remaining"] == first.headers["X-RateLimit-Remaining"]


def test_listing_changed_since_etag_gets_200_with_new_etag(fake: FakeGitHub) -> None:
    fake.add_pull(REPO, 1)
    first = api(fake, "/repos/acme/web/pulls")
    fake.add_pull(REPO, 2)

    again = api(fake, "/repos/acme/web/pulls", **{"If-None-Match": first.headers["ETag"]})

    assert again.status_code == 200
    assert again.headers["ETag"] != first.headers["ETag"]
    assert [p["number"] for p in again.json()] == [2, 1]


def test_get_pull_returns_state_title_author_and_head(fake: FakeGitHub, repo: Repository) -> None:
    fake.add_pull(REPO, 7, title="Add login", author="alice", head_sha="a" * 40, head_ref="login")

    pull = repo.get_pull(7)

    assert (pull.state, pull.merged, pull.title, pull.user.login) == ("open", False, "Add login", "alice")
    assert (pull.head.sha, pull.head.ref, pull.base.ref) == ("a" * 40, "login", "main")
    assert pull.html_url == "https://github.com/acme/web/pull/7"


def test_merged_pull_reports_closed_and_merged(fake: FakeGitHub, repo: Repository) -> None:
    fake.add_pull(REPO, 7)
    fake.close_pull(REPO, 7, merged=True)

    pull = repo.get_pull(7)

    assert (pull.state, pull.merged) == ("closed", True)
    assert pull.merged_at is not None


def test_reading_merged_on_a_listed_pull_costs_one_extra_call(fake: FakeGitHub, repo: Repository) -> None:
    fake.add_pull(REPO, 7)
    listed = next(iter(repo.get_pulls()))

    assert listed.merged is False
    assert fake.count("GET", "/repos/acme/web/pulls/7") == 1


def test_missing_pull_raises_unknown_object_404(repo: Repository) -> None:
    with pytest.raises(UnknownObjectException) as caught:
        repo.get_pull(404)

    assert caught.value.status == 404
    assert caught.value.data["message"] == "Not Found"


def test_creating_then_editing_a_comment_leaves_one_comment_with_new_body(fake: FakeGitHub, repo: Repository) -> None:
    fake.add_pull(REPO, 7)
    pull = repo.get_pull(7)

    comment = pull.create_issue_comment("Preview: building")
    comment.edit("Preview: ready")

    assert [c["body"] for c in fake.comments(REPO, 7)] == ["Preview: ready"]
    assert [c.body for c in pull.get_issue_comments()] == ["Preview: ready"]
    assert pull.get_issue_comment(comment.id).body == "Preview: ready"


def test_comments_are_written_as_the_token_user_and_listed_oldest_first() -> None:
    server_side = FakeGitHub(tokens={"bot-token": "previews[bot]"})
    with server_side:
        server_side.add_pull(REPO, 7)
        server_side.add_comment(REPO, 7, "first!", author="alice")
        pull = client(server_side, token="bot-token").get_repo(REPO).get_pull(7)

        pull.create_issue_comment("second")

        assert [(c.user.login, c.body) for c in pull.get_issue_comments()] == [
            ("alice", "first!"), ("previews[bot]", "second")
        ]


def test_unknown_token_is_rejected_as_bad_credentials() -> None:
    with FakeGitHub(tokens={"good": "bot"}) as server:
        server.add_repo(REPO)
        with pytest.raises(BadCredentialsException):
            client(server, token="bad").get_repo(REPO)


def test_request_without_authorization_gets_401(fake: FakeGitHub) -> None:
    response = requests.get(f"{fake.base_url}/repos/acme/web", timeout=5)

    assert response.status_code == 401
    assert response.json()["message"] == "Requires authentication"


def test_created_deployment_keeps_its_parameters_and_resolves_the_pull_head(fake: FakeGitHub, repo: Repository) -> None:
    fake.add_pull(REPO, 7, head_sha="b" * 40, head_ref="login")

    deployment = repo.create_deployment(
        ref="login", environment="pr-7", transient_environment=True, production_environment=False,
        auto_merge=False, required_contexts=[], payload={"pr": 7}, description="Preview for #7",
    )

    assert (deployment.sha, deployment.environment, deployment.payload) == ("b" * 40, "pr-7", {"pr": 7})
    [stored] = fake.deployments(REPO)
    assert stored["id"] == deployment.id
    assert (stored["auto_merge"], stored["required_contexts"], stored["transient_environment"]) == (False, [], True)


def test_deployments_are_filtered_by_environment_newest_first(fake: FakeGitHub, repo: Repository) -> None:
    first = repo.create_deployment(ref="main", environment="pr-1")
    repo.create_deployment(ref="main", environment="pr-2")
    second = repo.create_deployment(ref="main", environment="pr-1")

    assert [d.id for d in repo.get_deployments(environment="pr-1")] == [second.id, first.id]


def test_deployment_statuses_are_listed_newest_first_and_kept_in_creation_order(
    fake: FakeGitHub, repo: Repository
) -> None:
    deployment = repo.create_deployment(ref="main", environment="pr-7", production_environment=False)
    for state in ("queued", "in_progress", "success"):
        deployment.create_status(state, environment_url="https://pr-7.example.test")

    assert [s.state for s in deployment.get_statuses()] == ["success", "in_progress", "queued"]
    assert [s["state"] for s in fake.statuses(REPO, deployment.id)] == ["queued", "in_progress", "success"]
    assert fake.statuses(REPO, deployment.id)[-1]["environment_url"] == "https://pr-7.example.test"


def test_success_status_marks_the_previous_successful_deployment_inactive(fake: FakeGitHub, repo: Repository) -> None:
    old = repo.create_deployment(ref="main", environment="pr-7", production_environment=False)
    old.create_status("success")
    new = repo.create_deployment(ref="main", environment="pr-7", production_environment=False)

    new.create_status("success")

    assert old.get_statuses()[0].state == "inactive"


def test_missing_deployment_raises_unknown_object_404(repo: Repository) -> None:
    with pytest.raises(UnknownObjectException):
        repo.get_deployment(999)


def test_500_fault_surfaces_as_github_exception_with_status_500(fake: FakeGitHub, repo: Repository) -> None:
    fake.add_pull(REPO, 7)
    fake.fail_next(1, status=500)

    with pytest.raises(GithubException) as caught:
        repo.get_pull(7)

    assert caught.value.status == 500
    assert repo.get_pull(7).number == 7  # the fault was used up


def test_secondary_rate_limit_fault_carries_retry_after(fake: FakeGitHub, repo: Repository) -> None:
    fake.add_pull(REPO, 7)
    fake.fail_next(1, status=403, retry_after=30, secondary_rate_limit=True)

    with pytest.raises(RateLimitExceededException) as caught:
        repo.get_pull(7)

    assert caught.value.status == 403
    assert caught.value.headers["retry-after"] == "30"
    assert caught.value.data["message"].startswith("You have exceeded a secondary rate limit")


def test_pygithub_default_retry_waits_retry_after_then_succeeds(fake: FakeGitHub) -> None:
    fake.add_pull(REPO, 7)
    g = client(fake, retry=GithubRetry(total=3))
    pulls_repo = g.get_repo(REPO)
    fake.fail_next(1, status=403, retry_after=1, secondary_rate_limit=True)

    started = time.monotonic()
    assert pulls_repo.get_pull(7).number == 7

    assert time.monotonic() - started >= 1
    assert fake.count("GET", "/repos/acme/web/pulls/7") == 2


def test_429_fault_surfaces_as_github_exception_with_status_429(fake: FakeGitHub, repo: Repository) -> None:
    fake.add_pull(REPO, 7)
    fake.fail_next(1, status=429, retry_after=5)

    with pytest.raises(GithubException) as caught:
        repo.get_pull(7)

    assert (caught.value.status, caught.value.headers["retry-after"]) == (429, "5")


def test_fault_limited_to_a_path_leaves_other_requests_alone(fake: FakeGitHub, gh: Github) -> None:
    fake.add_pull(REPO, 7)
    fake.fail_next(1, status=404, path_contains="/pulls/")

    pulls_repo = gh.get_repo(REPO)
    with pytest.raises(UnknownObjectException):
        pulls_repo.get_pull(7)
    assert pulls_repo.get_pull(7).number == 7


def test_exhausted_primary_rate_limit_raises_rate_limit_exceeded(fake: FakeGitHub, gh: Github) -> None:
    fake.set_rate_limit(0)

    with pytest.raises(RateLimitExceededException) as caught:
        gh.get_repo(REPO)

    assert caught.value.headers["x-ratelimit-remaining"] == "0"
    assert gh.get_rate_limit().resources.core.remaining == 0


def test_primary_rate_limit_fault_reports_zero_remaining_once(fake: FakeGitHub, gh: Github) -> None:
    fake.fail_next(1, status=403, primary_rate_limit=True)

    with pytest.raises(RateLimitExceededException) as caught:
        gh.get_repo(REPO)

    assert caught.value.headers["x-ratelimit-remaining"] == "0"
    assert gh.get_repo(REPO).full_name == REPO


def test_each_served_request_uses_one_unit_of_rate_limit(fake: FakeGitHub, gh: Github) -> None:
    gh.get_repo(REPO)
    gh.get_repo(REPO)

    assert fake.rate_limit_remaining == 4998
    assert gh.rate_limiting == (4998, 5000)
    assert gh.get_rate_limit().resources.core.used == 2


def test_slow_response_makes_client_with_timeout_1_time_out(fake: FakeGitHub) -> None:
    fake.add_pull(REPO, 7)
    g = client(fake, timeout=1)
    pulls_repo = g.get_repo(REPO)
    fake.slow_next(1, 5)

    started = time.monotonic()
    with pytest.raises(requests.exceptions.Timeout):
        pulls_repo.get_pull(7)

    assert time.monotonic() - started < 4
