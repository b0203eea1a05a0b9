"""GitHub webhooks: each delivery acted on once, turning pull request events into preview changes."""

from __future__ import annotations

from django.conf import settings
from django.db import IntegrityError, transaction

from previews import forks, optin, pr_commands, selectors, services
from previews.models import ActorKind, Preview, PullRequestState, Repository, WebhookDelivery
from previews.payloads import (
    PayloadError,
    PullRequestEvent,
    image_for,
    parse_comment,
    parse_pull_request,
    repository_full_name,
)

TRUSTED_ASSOCIATIONS = forks.TRUSTED_ASSOCIATIONS
DEPLOY_ACTIONS = ("opened", "synchronize", "reopened")
# Actions that change whether a PR is opted in (label, draft state; see previews/optin.py).
OPT_IN_ACTIONS = ("labeled", "unlabeled", "ready_for_review", "converted_to_draft")


def secret_for(repository: Repository | None) -> str:
    """A repository's own secret replaces the global one: a delivery signed with the global secret is not
    accepted for a repository that has its own."""
    if repository is not None and repository.webhook_secret:
        return repository.webhook_secret
    return settings.GITHUB_WEBHOOK_SECRET


def handle_event(*, event: str, delivery_id: str, payload: dict, repository: Repository | None = None,
                 body_sha256: str = "") -> str:
    """Act on one delivery, at most once per delivery id and once per signed body (`body_sha256`: the
    delivery id header is not signed, so a captured body resent with a new id is the same delivery).
    Returns what was done, for the response and the log.

    The delivery is recorded in the same transaction as what it did, with the outcome: if acting fails
    (an error, a refusal such as the preview limit), nothing is recorded and GitHub's redelivery is acted on.
    A concurrent redelivery waits for the first to commit, then finds it recorded.
    """
    with transaction.atomic():
        try:
            with transaction.atomic():
                record = WebhookDelivery.objects.create(delivery_id=delivery_id, event=event[:50],
                                                        body_sha256=body_sha256[:64],
                                                        action=str(payload.get("action", ""))[:50])
        except IntegrityError:
            return "duplicate delivery, ignored"
        outcome = _dispatch(event, delivery_id, payload, repository)
        WebhookDelivery.objects.filter(pk=record.pk).update(outcome=outcome[:200])
    return outcome


def _dispatch(event: str, delivery_id: str, payload: dict, repository: Repository | None) -> str:
    if event == "ping":
        return "pong"
    if event not in ("pull_request", "issue_comment"):
        return f"event {event[:50]!r} is not used"
    full_name = repository_full_name(payload)
    if not full_name:
        raise PayloadError("repository.full_name", "expected 'owner/name'")
    if repository is None:
        owner, _, name = full_name.partition("/")
        repository = selectors.repository_get(owner, name)
    if repository is None:
        return f"repository {full_name!r} is not configured here"
    if event == "issue_comment":
        return pr_commands.handle_comment(repository, parse_comment(payload))
    return _pull_request(repository, delivery_id, parse_pull_request(payload))


def _pull_request(repository: Repository, delivery_id: str, pull: PullRequestEvent) -> str:
    actor = services.Actor(ActorKind.WEBHOOK, f"github:{delivery_id}")
    # The PR's state (open, draft, labels, head) is recorded for the opt-in rules, the API's and /preview's
    # decisions included, and for the stale-commit check of later API requests (which then need not ask GitHub).
    policy = optin.policy_of(repository)
    ours = pull.label is not None and pull.label.lower() == policy.label.lower()
    row = services.pull_request_record(
        repository=repository, pr_number=pull.number,
        state=PullRequestState.CLOSED if pull.action == "closed" else PullRequestState.OPEN,
        draft=pull.draft, labels=list(pull.labels), head_sha=pull.head_sha, head_repository=pull.head_repository,
        github_updated_at=pull.updated_at, reset_opt=pull.action in ("labeled", "unlabeled") and ours,
        author_association=pull.author_association)
    preview = selectors.preview_get(repository, pull.number)
    # A payload older than what is recorded (GitHub's order of updated_at) is not acted on: a `closed` replayed
    # after the PR was reopened must not destroy its preview, nor an old `opened` bring back a closed PR's.
    stale = stale_event(pull.action, row.state)
    if stale:
        return stale
    if pull.action == "closed":
        if preview is None:
            return f"no preview for #{pull.number}"
        merged = " (merged)" if pull.merged else ""
        services.preview_destroy(preview=preview, actor=actor, reason=f"PR #{pull.number} closed{merged}")
        return f"preview for #{pull.number} is being deleted"
    if pull.action not in DEPLOY_ACTIONS + OPT_IN_ACTIONS:
        return f"action {pull.action[:50]!r} is not used"
    if pull.action in ("labeled", "unlabeled") and not (ours and policy.mode == optin.LABEL):
        return f"label {str(pull.label)[:100]!r} is not the opt-in label"
    verdict = optin.decide(policy, optin.PullInfo(open=True, draft=row.draft, labels=frozenset(row.labels),
                                                  command_opt=row.command_opt))
    if not verdict.wanted:
        if pull.action in ("unlabeled", "converted_to_draft") and preview is not None and preview.is_live \
                and preview.desired == Preview.Desired.UP:
            services.preview_destroy(preview=preview, actor=actor,
                                     reason=f"PR #{pull.number} opted out: {verdict.reason}")
            return f"preview for #{pull.number} is being deleted: {verdict.reason}"
        return f"not opted in: {verdict.reason}"
    if pull.action == "converted_to_draft" or (pull.action == "unlabeled" and preview is not None):
        return "still opted in"
    if not repository.image_template:
        return "the repository has no image template; CI deploys through the API"
    refusal = forks.refusal(repository, pull.head_repository, pull.author_association)
    if refusal:
        return f"{refusal}: not deployed"
    request = services.PreviewRequest(head_sha=pull.head_sha, images=(image_for(repository.image_template, pull),),
                                      title=pull.title, author=pull.author)
    try:
        result = services.preview_upsert(repository=repository, pr_number=pull.number, request=request,
                                         actor=actor)
    except services.StaleCommit as exc:
        return f"stale commit, ignored: {exc}"[:200]
    return "deploy enqueued" if result.deploy_enqueued else "unchanged"


def stale_event(action: str, recorded_state: str) -> str:
    """Why a `pull_request` action is not acted on, given the PR's state as recorded after it ("" = act on it).
    The record keeps the newest payload by GitHub's `updated_at`, so a state that disagrees with the action
    means a newer payload said otherwise. Pure."""
    if action == "closed" and recorded_state == PullRequestState.OPEN:
        return "stale closed event (the PR is open again since), ignored"
    if action != "closed" and recorded_state != PullRequestState.OPEN:
        return f"{action[:50]} on a closed PR (a stale or replayed event), ignored"
    return ""
