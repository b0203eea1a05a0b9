"""The GitHub gateway and the PR notifications, with real PyGithub against the fake GitHub API."""

import re
from datetime import timedelta

import pytest
from django.utils import timezone
from django_q.models import Schedule

from previews import notifications, services
from previews.gateways import github
from previews.models import EventAction, Preview
from tests.factories import make_preview, make_repository

pytestmark = pytest.mark.django_db
REPO = "acme/shop"


@pytest.fixture
def preview(fake_github):
    fake_github.add_pull(REPO, 42, title="Add a cart", author="mona", head_sha="a" * 40)
    repository = make_repository(owner="acme", name="shop")
    return make_preview(repository, pr_number=42, namespace="pr-42", url="https://pr-42.preview.example.com")


# The event each status is reached with, as the engine records it.
STATUS_ACTIONS = {"ready": EventAction.READY, "failed": EventAction.DEPLOY_FAILED, "deleted": EventAction.DELETED,
                  "deleting": EventAction.DELETE_FAILED, "deploying": EventAction.DEPLOY_STARTED,
                  "pending": EventAction.DEPLOY_WAITING, "sleeping": EventAction.SLEPT}


def set_status(preview: Preview, status: str, message: str = "") -> None:
    assert services.preview_set_status(preview_id=preview.pk, generation=Preview.objects.get(pk=preview.pk)
                                       .generation, status=status, action=STATUS_ACTIONS[status], message=message)


def sync(preview: Preview) -> str:
    return notifications.sync_github(preview.pk)


# --- the sticky comment ------------------------------------------------------------------------------


def test_six_states_make_one_comment_created_once_and_edited_five_times(fake_github, preview):
    seen = []

    def step():
        assert sync(preview) == "synced"
        comments = fake_github.comments(REPO, 42)
        assert len(comments) == 1
        seen.append(comments[0]["body"])

    step()  # pending
    set_status(preview, "deploying")
    step()
    set_status(preview, "ready", "Ready")
    step()
    services.preview_extend(preview=preview, hours=24, reason="demo", actor=services.Actor("user", "ann"))
    step()
    services.preview_destroy(preview=preview, actor=services.Actor("token", "ci"), reason="PR #42 closed")
    step()
    set_status(preview, "deleted", "Namespace pr-42 deleted")
    step()

    assert fake_github.count("POST", "/repos/acme/shop/issues/42/comments") == 1
    assert len([r for r in fake_github.requests if r.method == "PATCH"]) == 5
    assert "Preview queued" in seen[0]
    assert "Preview deploying" in seen[1]
    assert "Preview ready" in seen[2] and "**https://pr-42.preview.example.com**" in seen[2]
    assert "Need it longer?" in seen[2] and "/extend" in seen[2]
    expiry = Preview.objects.get(pk=preview.pk).expires_at
    assert f"{expiry:%Y-%m-%d %H:%M} UTC" in seen[3] and seen[3] != seen[2]
    assert "being deleted" in seen[4] and "PR #42 closed" in seen[4]
    assert "Preview deleted" in seen[5]
    assert all(github.COMMENT_MARKER in body for body in seen)


def test_an_unchanged_preview_is_not_synced_twice(fake_github, preview):
    assert sync(preview) == "synced"
    fake_github.reset_requests()
    assert sync(preview) == "in sync"
    assert fake_github.requests == []


def test_the_comment_explains_a_failure(fake_github, preview):
    set_status(preview, "failed", "not ready after 60s: Deployment web: 0/2 ready. pod web-1 is ImagePullBackOff")
    sync(preview)
    body = fake_github.comments(REPO, 42)[0]["body"]
    assert "Preview failed" in body and "ImagePullBackOff" in body


def test_a_failures_log_tail_reaches_the_comment_and_cannot_close_its_code_block(fake_github, preview):
    log = "Last lines of pod web-1 container web (its last run, exit code 1):\n```\n**not markdown** @everyone\n````"
    set_status(preview, "failed", f"Not becoming ready: pod web-1 container web keeps crashing\n\n{log}")
    sync(preview)
    body = fake_github.comments(REPO, 42)[0]["body"]
    fence = "`" * 5  # longer than the longest run of backticks in the log
    start = body.index(fence + "\n") + len(fence) + 1
    end = body.index("\n" + fence, start)
    assert log in body[start:end]
    assert body.count(fence) == 2


@pytest.mark.parametrize("log", ["```", "``````", "a\n```\n# heading\n```", "~~~\n```"])
def test_no_run_of_backticks_in_a_failure_closes_its_fence(log):
    fence, text, closing = notifications.fenced(log)
    assert fence == closing and len(fence) > max(len(r) for r in re.findall(r"`+", log))
    assert text == log


def test_a_message_outside_a_code_block_is_escaped_so_it_stays_text(fake_github, preview):
    set_status(preview, "sleeping", "/preview sleep by @mona\n```\n<img src=x> **bold** [link](http://x)")
    sync(preview)
    body = fake_github.comments(REPO, 42)[0]["body"]
    assert re.search(r"(?<![\\`])``", body) is None and re.search(r"(?<!\\)<img", body) is None
    assert r"\`\`\` \<img src=x\> \*\*bold\*\* \[link\](http://x)" in body


def test_an_existing_comment_of_ours_is_adopted_not_duplicated(fake_github, preview):
    fake_github.add_comment(REPO, 42, "LGTM", author="octocat")
    fake_github.add_comment(REPO, 42, f"{github.COMMENT_MARKER}\nold text", author="fake-bot")
    sync(preview)
    bodies = [c["body"] for c in fake_github.comments(REPO, 42)]
    assert len(bodies) == 2 and bodies[0] == "LGTM"
    assert "Preview queued" in bodies[1]


def test_an_outsiders_comment_with_our_marker_is_never_edited(fake_github, preview):
    # Someone posts the marker first, hoping we adopt their comment and they can rewrite what the PR shows.
    planted = fake_github.add_comment(REPO, 42, f"{github.COMMENT_MARKER}\nclick http://evil.example", author="mallory")
    sync(preview)
    comments = fake_github.comments(REPO, 42)
    assert [c["user"] for c in comments] == ["mallory", "fake-bot"]
    assert comments[0]["body"].endswith("click http://evil.example")
    assert Preview.objects.get(pk=preview.pk).github_comment_id == comments[1]["id"] != planted["id"]


def test_a_known_comment_id_that_someone_else_wrote_is_not_edited(fake_github, preview):
    planted = fake_github.add_comment(REPO, 42, f"{github.COMMENT_MARKER}\nmine now", author="mallory")
    Preview.objects.filter(pk=preview.pk).update(github_comment_id=planted["id"])
    sync(preview)
    assert fake_github.comments(REPO, 42)[0]["body"].endswith("mine now")
    assert len(fake_github.comments(REPO, 42)) == 2


def test_a_deleted_comment_is_recreated(fake_github, preview):
    sync(preview)
    first = fake_github.comments(REPO, 42)[0]["id"]
    fake_github.reset_requests()
    import requests as http

    http.delete(f"{fake_github.base_url}/repos/{REPO}/issues/comments/{first}",
                headers={"Authorization": "token t"}, timeout=5)
    set_status(preview, "deploying")
    sync(preview)
    comments = fake_github.comments(REPO, 42)
    assert len(comments) == 1 and comments[0]["id"] != first


# --- deployments -----------------------------------------------------------------------------------


def test_deployment_statuses_arrive_in_order_and_go_inactive_after_teardown(fake_github, preview):
    sync(preview)
    for status in ("deploying", "ready"):
        set_status(preview, status)
        sync(preview)
    services.preview_destroy(preview=preview, actor=services.Actor("token", "ci"))
    sync(preview)
    set_status(preview, "deleted")
    sync(preview)

    [deployment] = fake_github.deployments(REPO)
    assert deployment["environment"] == "preview/pr-42"
    assert deployment["transient_environment"] is True
    assert deployment["production_environment"] is False
    assert deployment["auto_merge"] is False and deployment["required_contexts"] == []
    assert deployment["sha"] == "a" * 40
    states = fake_github.statuses(REPO, deployment["id"])
    assert [s["state"] for s in states] == ["queued", "in_progress", "success", "inactive"]
    assert states[2]["environment_url"] == "https://pr-42.preview.example.com"
    assert states[2]["log_url"].endswith(f"/previews/{preview.pk}/")


def test_a_failed_deploy_reports_failure_with_the_reason(fake_github, preview):
    sync(preview)
    set_status(preview, "failed", "the manifests were refused")
    sync(preview)
    [deployment] = fake_github.deployments(REPO)
    last = fake_github.statuses(REPO, deployment["id"])[-1]
    assert last["state"] == "failure" and "manifests were refused" in last["description"]


def test_a_new_generation_gets_a_new_deployment(fake_github, preview):
    sync(preview)
    services.preview_redeploy(preview=preview, actor=services.Actor("user", "ann"))
    sync(preview)
    assert len(fake_github.deployments(REPO)) == 2


# --- open PRs: pagination and ETags ----------------------------------------------------------------------


def test_250_open_prs_take_3_listing_calls_and_the_same_listing_again_is_served_by_304(fake_github):
    for n in range(1, 251):
        fake_github.add_pull("acme/big", n)
    fake_github.add_pull("acme/big", 251, state="closed")
    first = github.open_pull_numbers("acme/big")
    assert first.known and first.numbers == frozenset(range(1, 251))
    assert first.api_calls == 3 and first.not_modified == 0
    remaining = github.rate_limit_remaining()

    second = github.open_pull_numbers("acme/big")
    assert second.known and second.numbers == first.numbers
    assert second.api_calls == 3 and second.not_modified == 3
    assert github.rate_limit_remaining() == remaining


def test_a_changed_listing_is_read_again(fake_github):
    fake_github.add_pull(REPO, 1)
    assert github.open_pull_numbers(REPO).numbers == {1}
    fake_github.close_pull(REPO, 1)
    fake_github.add_pull(REPO, 2)
    result = github.open_pull_numbers(REPO)
    assert result.numbers == {2} and result.not_modified == 0


@pytest.mark.parametrize("fault", [
    {"status": 500},
    {"status": 502},
    {"status": 404},
    {"status": 403, "secondary_rate_limit": True, "retry_after": 30},
    {"status": 403, "primary_rate_limit": True},
    {"status": 429},
    {"status": 401},
])
def test_every_fault_is_unknown_never_closed(fake_github, fault):
    fake_github.add_pull(REPO, 1)
    fake_github.fail_next(1, **fault)
    result = github.open_pull_numbers(REPO)
    assert not result.known
    assert result.is_open(1) is None
    assert str(fault["status"]) in result.reason


def test_a_slow_github_is_unknown(fake_github, settings):
    settings.GITHUB_TIMEOUT = 1
    fake_github.add_pull(REPO, 1)
    fake_github.slow_next(1, 3)
    result = github.open_pull_numbers(REPO)
    assert not result.known and "did not answer within 1s" in result.reason


def test_an_unreachable_github_is_unknown(settings):
    settings.GITHUB_API_URL, settings.GITHUB_TOKEN = "http://127.0.0.1:9", "t"
    result = github.open_pull_numbers(REPO)
    assert not result.known and "could not be reached" in result.reason


def test_after_retry_after_github_is_not_asked_until_the_time_has_passed(fake_github):
    fake_github.add_pull(REPO, 1)
    fake_github.fail_next(1, status=403, secondary_rate_limit=True, retry_after=120)
    github.open_pull_numbers(REPO)
    fake_github.reset_requests()
    result = github.open_pull_numbers(REPO)
    assert not result.known and "rate limit" in result.reason
    assert fake_github.requests == []
    assert github.backoff_until() > timezone.now() + timedelta(seconds=100)


def test_rate_limit_remaining_is_recorded(fake_github):
    fake_github.add_pull(REPO, 1)
    fake_github.set_rate_limit(1234)
    github.open_pull_numbers(REPO)
    assert github.rate_limit_remaining() == 1233


# --- one PR --------------------------------------------------------------------------------------------------


def test_a_pull_requests_state_is_open_closed_or_merged(fake_github):
    fake_github.add_pull(REPO, 1, title="One", author="mona")
    fake_github.add_pull(REPO, 2)
    fake_github.add_pull(REPO, 3)
    fake_github.close_pull(REPO, 2)
    fake_github.close_pull(REPO, 3, merged=True)
    one = github.pull_state(REPO, 1)
    assert (one.state, one.title, one.author) == ("open", "One", "mona")
    assert github.pull_state(REPO, 2).state == "closed"
    assert github.pull_state(REPO, 3).state == "merged"


def test_a_missing_pull_request_is_unknown_not_closed(fake_github):
    fake_github.add_repo(REPO)
    state = github.pull_state(REPO, 404)
    assert state.state == "unknown" and not state.known and "404" in state.reason


# --- failures never block --------------------------------------------------------------------------------


def test_a_failed_sync_is_recorded_and_retried_later(fake_github, preview):
    fake_github.fail_next(10, status=500)
    assert sync(preview) == "failed"
    event = Preview.objects.get(pk=preview.pk).events.get(action="github failed")
    assert "500" in event.message
    assert Schedule.objects.filter(func="previews.tasks.sync_github", args=f"({preview.pk},)").exists()
    assert Preview.objects.get(pk=preview.pk).github_synced_key == "failed"
    fake_github.clear_faults()
    assert sync(preview) == "synced"


def test_without_github_configured_nothing_is_attempted(settings):
    settings.GITHUB_TOKEN = ""
    preview = make_preview()
    assert notifications.sync_github(preview.pk) == "disabled"


def test_the_comment_body_is_rendered_from_the_preview_alone():
    repository = make_repository(owner="acme", name="shop")
    preview = Preview(repository=repository, pr_number=7, namespace="pr-7", url="https://pr-7.x.example",
                      head_sha="b" * 40, status="ready", expires_at=timezone.now() + timedelta(hours=50), pk=3)
    body = notifications.comment_body(preview, timezone.now(), expiry_warning=False)
    assert "🟢 Preview ready" in body and "| Commit | `bbbbbbb` |" in body and "in 2 days" in body
    preview.pinned = True
    assert "never: pinned" in notifications.comment_body(preview, timezone.now())


# --- GitHub App authentication --------------------------------------------------------------------


def _rsa_key_pair() -> tuple[str, str]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private, public


@pytest.fixture
def github_app(settings):
    from tests.fake_github import FakeGitHub

    private, public = _rsa_key_pair()
    with FakeGitHub(tokens={}) as fake:  # no plain tokens: only installation tokens work
        fake.configure_app(4242, public, bot_login="previews-app[bot]")
        settings.GITHUB_API_URL, settings.GITHUB_TOKEN, settings.GITHUB_TIMEOUT = fake.base_url, "", 2
        settings.GITHUB_APP_ID, settings.GITHUB_APP_INSTALLATION_ID = "4242", "77"
        settings.GITHUB_APP_PRIVATE_KEY = private
        yield fake


def test_a_github_app_comments_with_an_installation_token(github_app):
    github_app.add_pull(REPO, 42)
    preview = make_preview(make_repository(owner="acme", name="shop"), pr_number=42, namespace="pr-42")
    assert github.is_configured()
    assert notifications.sync_github(preview.pk) == "synced"
    [comment] = github_app.comments(REPO, 42)
    assert comment["user"] == "previews-app[bot]"
    assert github_app.count("POST", "/app/installations/77/access_tokens") == 1


def test_a_github_app_edits_only_its_own_bots_comment(github_app):
    github_app.add_pull(REPO, 42)
    github_app.add_comment(REPO, 42, f"{github.COMMENT_MARKER}\nplanted", author="previews-app")  # not the bot
    preview = make_preview(make_repository(owner="acme", name="shop"), pr_number=42, namespace="pr-42")
    notifications.sync_github(preview.pk)
    set_status(preview, "deploying")
    notifications.sync_github(preview.pk)
    comments = github_app.comments(REPO, 42)
    assert [c["user"] for c in comments] == ["previews-app", "previews-app[bot]"]
    assert "Preview deploying" in comments[1]["body"] and comments[0]["body"].endswith("planted")


def test_a_github_app_with_the_wrong_key_is_unknown_not_closed(github_app, settings):
    settings.GITHUB_APP_PRIVATE_KEY = _rsa_key_pair()[0]
    github_app.add_pull(REPO, 1)
    result = github.open_pull_numbers(REPO)
    assert not result.known and "401" in result.reason


def test_the_app_key_may_be_a_file_path(github_app, settings, tmp_path):
    key_file = tmp_path / "app.pem"
    key_file.write_text(settings.GITHUB_APP_PRIVATE_KEY)
    settings.GITHUB_APP_PRIVATE_KEY = str(key_file)
    github_app.add_pull(REPO, 1)
    assert github.open_pull_numbers(REPO).numbers == {1}
