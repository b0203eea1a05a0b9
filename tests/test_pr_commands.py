"""/preview comment commands and label opt-in through the signed webhook, answered on the fake GitHub
(real PyGithub). Tasks queued by a request are run here in-process from the real django-q2 queue."""

import itertools
import json

import pytest
from django.db.models import F
from django.test import Client
from django.utils.module_loading import import_string
from django_q.models import OrmQ
from django_q.signing import SignedPackage

from previews import notifications, payloads, services
from previews.models import CommentCommand, Preview, PullRequest
from previews.services import pull_requests
from tests.factories import make_preview, make_repository

pytestmark = pytest.mark.django_db
SECRET = "s3cret"
REPO = "acme/shop"
SHA, SHA2 = "a" * 40, "b" * 40
_deliveries = itertools.count(1)


@pytest.fixture
def hook(settings, django_capture_on_commit_callbacks):
    settings.GITHUB_WEBHOOK_SECRET = SECRET
    client = Client()

    def send(payload: dict, event: str = "issue_comment", delivery: str | None = None, status: int = 202):
        body = json.dumps(payload).encode()
        with django_capture_on_commit_callbacks(execute=True):
            response = client.post("/api/v1/github/webhook", data=body, content_type="application/json",
                                   HTTP_X_GITHUB_EVENT=event,
                                   HTTP_X_GITHUB_DELIVERY=delivery or f"d-{next(_deliveries)}",
                                   HTTP_X_HUB_SIGNATURE_256=payloads.signature_for(SECRET, body))
        assert response.status_code == status, response.content
        return response.json()["outcome"] if status == 202 else response.json()

    return send


def run_queued(*names: str) -> list:
    """Run the queued tasks with these function names (answers, GitHub sync), in order; leave the rest."""
    results = []
    for row in OrmQ.objects.order_by("id"):
        task = SignedPackage.loads(row.payload)
        if task["func"].rsplit(".", 1)[1] in names:
            row.delete()
            results.append(import_string(task["func"])(*task["args"], **task["kwargs"]))
    return results


def queued() -> list[str]:
    return [SignedPackage.loads(row.payload)["func"].rsplit(".", 1)[1] for row in OrmQ.objects.order_by("id")]


@pytest.fixture
def pr(fake_github):
    fake_github.add_pull(REPO, 7, head_sha=SHA)
    return 7


def comment(fake_github, body: str, login: str = "mona", association: str = "MEMBER", number: int = 7,
            user_type: str = "User") -> dict:
    """Seed the comment on the fake (so it can be reacted to) and build GitHub's issue_comment payload."""
    seeded = fake_github.add_comment(REPO, number, body, author=login)
    return {"action": "created", "repository": {"full_name": REPO},
            "issue": {"number": number, "state": "open", "pull_request": {"url": "..."}, "labels": []},
            "comment": {"id": seeded["id"], "body": body, "author_association": association,
                        "user": {"login": login, "type": user_type}}}


def reactions(fake_github, payload) -> list[str]:
    return [r["content"] for r in fake_github.reactions(REPO, payload["comment"]["id"])]


def replies(fake_github) -> list[str]:
    return [c["body"] for c in fake_github.comments(REPO, 7) if c["user"] == "fake-bot"
            and "pr-previews:status-comment" not in c["body"]]


def sticky(fake_github) -> str:
    [body] = [c["body"] for c in fake_github.comments(REPO, 7) if "pr-previews:status-comment" in c["body"]]
    return body


@pytest.fixture
def live(pr):
    """A ready preview with its sticky comment on the PR."""
    repository = make_repository(owner="acme", name="shop")
    preview = make_preview(repository, pr_number=7, namespace="pr-7-cmd", status="ready", head_sha=SHA)
    assert notifications.sync_github(preview.pk) == "synced"
    return preview


def test_extend_from_a_member_extends_once_reacts_and_shows_on_the_sticky_comment(hook, fake_github, live):
    before = live.expires_at
    payload = comment(fake_github, "/preview extend 48h QA tomorrow")
    outcome = hook(payload, delivery="same")
    assert outcome.startswith("/preview extend 48h: extended by 48 h")
    assert hook(payload, delivery="same") == "duplicate delivery, ignored"
    run_queued("answer_comment", "sync_github")

    live.refresh_from_db()
    assert (live.expires_at - before).total_seconds() == 48 * 3600
    assert reactions(fake_github, payload) == ["+1"]
    assert replies(fake_github) == []  # the result is in the sticky comment
    assert "✅ `/preview extend 48h` by @mona: extended by 48 h" in sticky(fake_github)
    extended = live.events.get(action="extended")
    assert (extended.actor_kind, extended.actor, extended.message) == ("github", "mona", "QA tomorrow")
    assert live.events.get(action="command").actor == "mona"


@pytest.mark.parametrize("body,check", [
    ("/preview pin", lambda p: p.pinned),
    ("/preview sleep", lambda p: p.status == "sleeping" and p.events.filter(action="sleep requested").exists()),
    ("/preview redeploy", lambda p: p.status == "pending" and p.events.get(action="redeploy requested")
     .actor_kind == "github"),
    ("/preview delete", lambda p: p.desired == "down" and "@mona" in p.status_message),
])
def test_each_command_does_what_it_says(hook, fake_github, live, body, check):
    payload = comment(fake_github, body)
    hook(payload)
    live.refresh_from_db()
    assert check(live)
    assert live.last_command["ok"] is True and live.last_command["user"] == "mona"
    run_queued("answer_comment")
    assert reactions(fake_github, payload) == ["+1"]


def test_wake_brings_a_sleeping_preview_back_through_a_deploy(hook, fake_github, live):
    services.preview_sleep(preview=live, actor=services.Actor("user", "ann"))
    live.refresh_from_db()
    generation = live.generation
    hook(comment(fake_github, "/preview wake"))
    live.refresh_from_db()
    assert live.status == "pending" and live.generation == generation + 1
    assert live.events.get(action="wake requested").actor == "mona"
    assert "deploy_preview" in queued()


def test_an_outsider_changes_nothing_and_is_told_why(hook, fake_github, live):
    payload = comment(fake_github, "/preview delete", login="mallory", association="CONTRIBUTOR")
    assert "not trusted" in hook(payload)
    live.refresh_from_db()
    assert live.desired == "up" and not live.events.filter(actor="mallory").exists()
    run_queued("answer_comment")
    assert reactions(fake_github, payload) == ["-1"]
    [reply] = replies(fake_github)
    assert reply.startswith("@mallory `/preview` commands on acme/shop are obeyed only from collaborator, member, "
                            "owner")


def test_the_trusted_associations_are_a_repository_setting(hook, fake_github, live):
    live.repository.command_associations = "OWNER"
    live.repository.save()
    hook(comment(fake_github, "/preview pin", association="MEMBER"))
    live.refresh_from_db()
    assert not live.pinned


def test_a_malformed_or_unknown_command_gets_help(hook, fake_github, live):
    payload = comment(fake_github, "/preview extend forever")
    assert hook(payload).startswith("malformed")
    run_queued("answer_comment")
    assert reactions(fake_github, payload) == ["confused"]
    [reply] = replies(fake_github)
    assert "needs a duration" in reply and "/preview extend 48h [reason]" in reply
    live.refresh_from_db()
    assert not live.events.filter(action="extended").exists()


def test_a_refused_command_says_why_with_a_thumbs_down(hook, fake_github, live):
    payload = comment(fake_github, "/preview extend 9999h")
    hook(payload)
    run_queued("answer_comment", "sync_github")
    assert reactions(fake_github, payload) == ["confused"]  # over the parser's bound
    payload = comment(fake_github, "/preview extend 2000h")  # over the repository's maximum TTL
    hook(payload)
    run_queued("answer_comment", "sync_github")
    assert reactions(fake_github, payload) == ["-1"]
    assert "❌ `/preview extend 2000h` by @mona: that would run past the maximum" in sticky(fake_github)


def test_a_flood_is_rate_limited_and_told_once(hook, fake_github, live, settings):
    settings.PREVIEWS_COMMAND_RATE_LIMIT = 3
    outcomes = [hook(comment(fake_github, "/preview pin" if i % 2 == 0 else "/preview unpin")) for i in range(8)]
    assert [o == "rate limited" for o in outcomes] == [False] * 3 + [True] * 5
    assert CommentCommand.objects.filter(pr_number=7).count() == 8
    assert live.events.filter(action__in=["pinned", "unpinned"]).count() == 3
    run_queued("answer_comment")
    assert len([r for r in replies(fake_github) if "the most allowed" in r]) == 1


def test_outsiders_cannot_use_up_a_prs_command_limit(hook, fake_github, live, settings):
    settings.PREVIEWS_COMMAND_RATE_LIMIT = 3
    for _ in range(10):
        assert "not trusted" in hook(comment(fake_github, "/preview pin", login="mallory", association="NONE"))
    assert hook(comment(fake_github, "/preview pin")) == "/preview pin: pinned: it never expires"
    live.refresh_from_db()
    assert live.pinned


def test_a_flood_of_outsider_comments_is_answered_once(hook, fake_github, live):
    payloads_sent = [comment(fake_github, "/preview delete", login="mallory", association="NONE") for _ in range(6)]
    for payload in payloads_sent:
        hook(payload)
    run_queued("answer_comment")
    assert len([r for r in replies(fake_github) if "are obeyed only from" in r]) == 1
    assert [reactions(fake_github, p) for p in payloads_sent] == [["-1"]] + [[]] * 5
    assert CommentCommand.objects.filter(pr_number=7, login="mallory").count() == 6  # each still recorded


@pytest.mark.parametrize("payload_change,outcome", [
    ({"action": "edited"}, "only new comments"),
    ({"issue": {"number": 7}}, "not a pull request"),
    ({"comment": {"id": 1, "body": "/preview pin", "user": {"login": "bot[bot]", "type": "Bot"},
                  "author_association": "OWNER"}}, "bots"),
    ({"comment": {"id": 1, "body": "/preview pin", "user": {"login": "x\n@everyone"},
                  "author_association": "OWNER"}}, "no usable login"),
    ({"comment": {"id": 1, "body": "thanks!", "user": {"login": "mona"}}}, "not a command"),
])
def test_odd_payloads_do_nothing(hook, fake_github, live, payload_change, outcome):
    payload = {**comment(fake_github, "/preview pin", association="OWNER"), **payload_change}
    assert outcome in hook(payload)
    live.refresh_from_db()
    assert not live.pinned


@pytest.mark.parametrize("payload_change,field", [
    ({"comment": {"id": "1", "body": "/preview pin", "user": {"login": "mona"}}}, "comment.id"),
    ({"comment": {"id": 0, "body": "/preview pin", "user": {"login": "mona"}}}, "comment.id"),
    ({"comment": {"id": 1, "body": "/preview pin", "user": {"login": 5}}}, "comment.user.login"),
    ({"comment": {"id": 1, "body": "/preview pin", "user": "mona"}}, "comment.user.login"),
    ({"comment": {"id": 1, "body": ["/preview pin"], "user": {"login": "mona"}}}, "comment.body"),
    ({"comment": None}, "comment.id"),
    ({"issue": "nope"}, "issue.number"),
    ({"issue": {"number": 0, "pull_request": {}}}, "issue.number"),
    ({"issue": {"number": True, "pull_request": {}}}, "issue.number"),
    ({"issue": {"number": 7, "pull_request": "yes"}}, "issue.pull_request"),
    ({"action": ["created"]}, "action"),
])
def test_malformed_comment_payloads_are_a_400_naming_the_field(hook, fake_github, live, payload_change, field):
    payload = {**comment(fake_github, "/preview pin", association="OWNER"), **payload_change}
    problem = hook(payload, status=400)
    assert [e["field"] for e in problem["errors"]] == [field]
    live.refresh_from_db()
    assert not live.pinned
    assert not CommentCommand.objects.exists()


def test_help_replies_with_the_table(hook, fake_github, live):
    payload = comment(fake_github, "/preview help")
    hook(payload)
    run_queued("answer_comment")
    assert reactions(fake_github, payload) == ["+1"]
    assert "| `/preview sleep` / `/preview wake` |" in replies(fake_github)[0]


# --- opt-in --------------------------------------------------------------------------------------------------


def pr_event(action: str, number: int = 7, labels=(), draft: bool = False, sha: str = SHA, label: str | None = None,
             updated_at: str = "2026-01-01T00:00:00Z") -> dict:
    payload = {"action": action, "number": number, "repository": {"full_name": REPO},
               "pull_request": {"number": number, "draft": draft, "title": "Add cart", "user": {"login": "mona"},
                                "head": {"sha": sha, "repo": {"full_name": REPO}},
                                "labels": [{"name": n} for n in labels],
                                "updated_at": updated_at}}
    if label:
        payload["label"] = {"name": label}
    return payload


@pytest.fixture
def by_label(db):
    return make_repository(owner="acme", name="shop", opt_in="label", image_template="ghcr.io/acme/shop:{sha}")


def test_label_opt_in_creates_on_labeled_and_destroys_on_unlabeled(hook, by_label):
    assert hook(pr_event("opened"), event="pull_request").startswith("not opted in")
    assert not Preview.objects.exists()
    assert hook(pr_event("labeled", labels=["bug"], label="bug", updated_at="2026-01-01T00:01:00Z"),
                event="pull_request").startswith("label 'bug' is not")
    assert hook(pr_event("labeled", labels=["bug", "preview"], label="preview", updated_at="2026-01-01T00:02:00Z"),
                event="pull_request") == "deploy enqueued"
    preview = Preview.objects.get(pr_number=7)
    assert hook(pr_event("synchronize", labels=["bug", "preview"], sha=SHA2, updated_at="2026-01-01T00:03:00Z"),
                event="pull_request") == "deploy enqueued"
    # an older delivery arriving late changes nothing
    hook(pr_event("unlabeled", labels=["bug"], label="preview", updated_at="2026-01-01T00:00:30Z"),
         event="pull_request")
    preview.refresh_from_db()
    assert preview.desired == "up" and preview.head_sha == SHA2
    assert "being deleted" in hook(pr_event("unlabeled", labels=["bug"], label="preview",
                                            updated_at="2026-01-01T00:04:00Z"), event="pull_request")
    preview.refresh_from_db()
    assert preview.desired == "down" and "opted out" in preview.status_message


@pytest.mark.parametrize("change,field", [
    (lambda p: p["pull_request"].update(labels=[{"name": 5}]), "pull_request.labels[0].name"),
    (lambda p: p["pull_request"].update(labels=["preview"]), "pull_request.labels[0].name"),
    (lambda p: p["pull_request"].update(labels="preview"), "pull_request.labels"),
    (lambda p: p.update(label="preview"), "label"),
    (lambda p: p.update(label={"name": None}), "label.name"),
    (lambda p: p["pull_request"].update(draft="yes"), "pull_request.draft"),
    (lambda p: p["pull_request"].update(updated_at="yesterday"), "pull_request.updated_at"),
    (lambda p: p["pull_request"].update(updated_at=1767225600), "pull_request.updated_at"),
])
def test_malformed_opt_in_fields_are_a_400_naming_the_field(hook, by_label, change, field):
    payload = pr_event("labeled", labels=["preview"], label="preview")
    change(payload)
    problem = hook(payload, event="pull_request", status=400)
    assert [e["field"] for e in problem["errors"]] == [field]
    assert not Preview.objects.exists()


def test_a_draft_gets_no_preview_until_ready_for_review(hook, db):
    make_repository(owner="acme", name="shop", image_template="ghcr.io/acme/shop:{sha}")
    assert "draft" in hook(pr_event("opened", draft=True), event="pull_request")
    assert not Preview.objects.exists()
    assert hook(pr_event("ready_for_review", updated_at="2026-01-01T00:01:00Z"),
                event="pull_request") == "deploy enqueued"
    assert Preview.objects.get(pr_number=7).desired == "up"
    assert "being deleted" in hook(pr_event("converted_to_draft", draft=True, updated_at="2026-01-01T00:02:00Z"),
                                   event="pull_request")


def test_drafts_get_previews_when_the_repository_allows(hook, db):
    make_repository(owner="acme", name="shop", image_template="ghcr.io/acme/shop:{sha}", preview_drafts=True)
    assert hook(pr_event("opened", draft=True), event="pull_request") == "deploy enqueued"


def test_slash_preview_opts_a_pr_in_without_the_label_and_delete_opts_it_out(hook, fake_github, pr, by_label):
    hook(pr_event("opened"), event="pull_request")
    payload = comment(fake_github, "/preview")
    assert hook(payload) == "/preview: creating the preview of aaaaaaa"
    preview = Preview.objects.get(pr_number=7)
    assert preview.events.get(action="created").actor == "mona"
    run_queued("answer_comment")
    assert reactions(fake_github, payload) == ["+1"]
    fake_github.update_pull(REPO, 7, head_sha=SHA2)  # a push (the service checks the head with GitHub)
    assert hook(pr_event("synchronize", sha=SHA2, updated_at="2026-01-01T00:01:00Z"),
                event="pull_request") == "deploy enqueued"
    hook(comment(fake_github, "/preview delete"))
    fake_github.update_pull(REPO, 7, head_sha=SHA)
    assert "/preview delete" in hook(pr_event("synchronize", sha=SHA, updated_at="2026-01-01T00:02:00Z"),
                                     event="pull_request")
    preview.refresh_from_db()
    assert preview.desired == "down"


def test_the_api_refuses_a_pr_that_is_not_opted_in(client, db, hook):
    repository = make_repository(owner="acme", name="shop", opt_in="label")
    _token, plaintext = services.token_create(name="ci", repository=repository)
    hook(pr_event("opened"), event="pull_request")
    url = "/api/v1/repos/acme/shop/previews/7"
    body = {"head_sha": SHA, "image": "ghcr.io/acme/shop:pr-7"}
    response = client.put(url, body, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {plaintext}")
    assert response.status_code == 409
    assert response.json()["detail"].startswith("not opted in: PR #7 of acme/shop gets no preview: the PR does not "
                                                "have the label 'preview'")
    hook(pr_event("labeled", labels=["preview"], label="preview", updated_at="2026-01-01T00:01:00Z"),
         event="pull_request")
    response = client.put(url, body, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {plaintext}")
    assert response.status_code == 201


def test_the_api_asks_github_when_no_webhook_told_and_goes_ahead_when_it_cannot(client, fake_github, pr):
    repository = make_repository(owner="acme", name="shop")
    _, plaintext = services.token_create(name="ci", repository=repository)
    fake_github.update_pull(REPO, 7, draft=True)
    url = "/api/v1/repos/acme/shop/previews/7"
    body = {"head_sha": SHA, "image": "ghcr.io/acme/shop:pr-7"}
    response = client.put(url, body, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {plaintext}")
    assert response.status_code == 409 and "draft" in response.json()["detail"]
    # GitHub's answer is kept for a minute (services.pull_requests.ASKED_KEPT); let it pass.
    PullRequest.objects.update(asked_at=F("asked_at") - pull_requests.ASKED_KEPT)
    fake_github.fail_next(status=502, method="GET", path_contains="/pulls/7")
    response = client.put(url, body, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {plaintext}")
    assert response.status_code == 201


# --- /preview on a PR from a fork ------------------------------------------------------------------------------


def fork_opened(updated_at: str = "2026-01-01T00:00:00Z", sha: str = SHA) -> dict:
    payload = pr_event("opened", sha=sha, updated_at=updated_at)
    payload["pull_request"]["head"]["repo"] = {"full_name": "outsider/shop"}
    payload["pull_request"]["author_association"] = "NONE"
    return payload


@pytest.fixture
def forked(fake_github, db):
    fake_github.add_pull(REPO, 7, head_sha=SHA, head_repository="outsider/shop", author_association="NONE")
    return make_repository(owner="acme", name="shop", image_template="ghcr.io/acme/shop:{sha}")


def test_slash_preview_does_not_deploy_a_fork_unless_the_repository_allows_fork_previews(hook, fake_github, forked):
    assert "fork" in hook(fork_opened(), event="pull_request")
    outcome = hook(comment(fake_github, "/preview", association="OWNER"))
    assert "does not allow fork previews" in outcome
    assert not Preview.objects.filter(pr_number=7).exists()


def test_slash_preview_deploys_a_fork_vouched_for_by_a_member_when_allowed(hook, fake_github, forked):
    forked.allow_fork_previews = True
    forked.save()
    hook(fork_opened(), event="pull_request")
    assert hook(comment(fake_github, "/preview", association="MEMBER")) == "/preview: creating the preview of aaaaaaa"
    assert Preview.objects.filter(pr_number=7).exists()


def test_slash_preview_on_a_fork_needs_a_maintainer_whatever_the_command_associations(hook, fake_github, forked):
    forked.allow_fork_previews = True
    forked.command_associations = "OWNER,MEMBER,COLLABORATOR,CONTRIBUTOR"
    forked.save()
    hook(fork_opened(), event="pull_request")
    outcome = hook(comment(fake_github, "/preview", login="carol", association="CONTRIBUTOR"))
    assert "for a commenter GitHub calls CONTRIBUTOR" in outcome
    assert not Preview.objects.filter(pr_number=7).exists()


def test_slash_preview_asks_github_where_the_branch_is_and_records_it(hook, fake_github, forked):
    assert not PullRequest.objects.filter(pr_number=7).exists()  # no pull_request webhook told us anything
    assert "does not allow fork previews" in hook(comment(fake_github, "/preview", association="OWNER"))
    row = PullRequest.objects.get(repository=forked, pr_number=7)
    assert (row.head_repository, row.author_association) == ("outsider/shop", "NONE")
    assert not Preview.objects.filter(pr_number=7).exists()


def test_slash_preview_refuses_a_fork_head_pushed_after_the_comment(hook, fake_github, forked):
    forked.allow_fork_previews = True
    forked.save()
    payload = comment(fake_github, "/preview", association="MEMBER")
    payload["comment"]["created_at"] = "2026-01-01T00:05:00Z"
    hook(fork_opened(updated_at="2026-01-01T00:10:00Z", sha=SHA2), event="pull_request")  # pushed after it
    assert "moved to bbbbbbb after this comment" in hook(payload)
    assert not Preview.objects.filter(pr_number=7).exists()
