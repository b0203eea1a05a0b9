"""What the service knows of a pull request, and the one way to ask GitHub for more.

One `PullRequest` row per PR (models.py says what it holds), written here only:

- `pull_request_record`: a signed `pull_request` webhook's state (newer payloads only) and head;
- `pull_request_set_opt`: a /preview or /preview delete;
- `PullRequestFacts`: what one request knows of the PR, asking GitHub at most once, bounded, and recording
  what GitHub answered; the opt-in check (`opt_in_refusal`), the stale-commit check
  (`stale_request_reason`) and /preview's head (`head_for_deploy`) read and ask through it.

Only a known answer ever refuses a request: when neither the webhooks nor GitHub can say, it goes ahead.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from previews import optin, validators
from previews.gateways import github
from previews.models import CommandOpt, Preview, PullRequest, PullRequestState, Repository

EARLIER_HEADS_KEPT = 50  # earlier heads remembered per PR
# GitHub's answer about a PR no webhook told about (or its not answering) is trusted this long for opt-in: a
# burst of CI requests for one PR asks once, and waits at most PREVIEWS_STALE_CHECK_TIMEOUT for it.
ASKED_KEPT = timedelta(seconds=60)
MAX_LABELS = 100


@dataclass(frozen=True)
class KnownHead:
    head_sha: str
    seen_at: datetime  # when GitHub said it was the head (the PR's updated_at in a webhook event, or asked)
    earlier: tuple[str, ...] = ()  # commits seen as the PR's head before `seen_at`, most recent last


def pull_request_get(repository: Repository, pr_number: int) -> PullRequest | None:
    return PullRequest.objects.filter(repository=repository, pr_number=pr_number).first()


def known_head(pull: PullRequest | None) -> KnownHead | None:
    """The PR's head as last seen with a time, or None when no observation of it was ever dated."""
    if pull is None or not pull.head_sha or pull.head_seen_at is None:
        return None
    return KnownHead(pull.head_sha, pull.head_seen_at, tuple(pull.earlier_heads))


def _locked(repository: Repository, pr_number: int) -> PullRequest:
    """The PR's row, locked until the transaction ends; created when it is new."""
    pull, _ = PullRequest.objects.select_for_update().get_or_create(repository=repository, pr_number=pr_number)
    return pull


def _bounded_labels(labels) -> list[str]:
    return sorted({str(label)[:100] for label in labels})[:MAX_LABELS]


def _observe_head(pull: PullRequest, head_sha: str, seen_at: datetime, not_heads: tuple[str, ...] = ()) -> None:
    """Fold "`head_sha` was the PR's head at `seen_at`" into the row, whatever order observations arrive in.

    The latest observation is the known head; every other commit observed is an earlier head: a webhook
    delivered late (an older `updated_at`) adds its commit to the earlier ones and leaves the head alone.
    `not_heads`: commits of this PR known to exist at `seen_at` that were not its head then (earlier heads).
    An undated head (a payload without `updated_at`) is not part of this order.
    """
    current, earlier = pull.head_sha, list(pull.earlier_heads)
    if pull.head_seen_at is None or seen_at >= pull.head_seen_at:
        if current and current != head_sha and pull.head_seen_at is not None:
            earlier.append(current)
        earlier = [sha for sha in earlier if sha != head_sha]
        current, pull.head_seen_at = head_sha, seen_at
    elif head_sha != current and head_sha not in earlier:
        earlier.append(head_sha)
    earlier += [sha for sha in dict.fromkeys(not_heads) if sha and sha != current and sha not in earlier]
    pull.head_sha, pull.earlier_heads = current, earlier[-EARLIER_HEADS_KEPT:]


def pull_request_record(*, repository: Repository, pr_number: int, state: PullRequestState, draft: bool,
                        labels: list[str], head_sha: str = "", head_repository: str = "",
                        github_updated_at: datetime | None = None, reset_opt: bool = False,
                        author_association: str = "") -> PullRequest:
    """Record a signed `pull_request` webhook's payload: its state unless what is stored is newer (deliveries
    come out of order), and its head, in the PR's own order of `updated_at`.

    `reset_opt` (the opt-in label was added or removed) clears a /preview or /preview delete override.
    """
    with transaction.atomic():
        pull = _locked(repository, pr_number)
        newer = not (pull.github_updated_at and github_updated_at and github_updated_at < pull.github_updated_at)
        if newer:
            pull.state, pull.draft, pull.labels = state, draft, _bounded_labels(labels)
            pull.head_repository = head_repository or pull.head_repository
            pull.author_association = author_association[:30] or pull.author_association
            pull.github_updated_at = github_updated_at or pull.github_updated_at
            if reset_opt:
                pull.command_opt = CommandOpt.NONE
        if validators.SHA_RE.fullmatch(head_sha or ""):
            if github_updated_at is not None:
                _observe_head(pull, head_sha, github_updated_at)
            elif newer and pull.head_seen_at is None:
                pull.head_sha = head_sha
        pull.save()
    return pull


def pull_request_set_opt(*, repository: Repository, pr_number: int, opt: CommandOpt) -> PullRequest:
    """/preview ("in") or /preview delete ("out"): an explicit wish that overrides the label."""
    with transaction.atomic():
        pull = _locked(repository, pr_number)
        pull.command_opt = opt
        pull.save(update_fields=["command_opt", "updated_at"])
    return pull


class PullRequestFacts:
    """What the service knows of one PR while it handles one request, asking GitHub at most once.

    `ask_github` is the one call to GitHub about the PR: its answer is recorded (the state, draft and labels
    when no webhook told them, the head as seen now, and when GitHub was asked and whether it answered), and
    a second question in the same request gets the same answer.
    """

    def __init__(self, repository: Repository, pr_number: int) -> None:
        self.repository, self.pr_number = repository, pr_number
        self.answer: github.PullState | None = None
        self.asked_at: datetime | None = None

    def stored(self) -> PullRequest | None:
        return pull_request_get(self.repository, self.pr_number)

    def ask_github(self, timeout: float | None = None, not_heads: tuple[str, ...] = ()) -> github.PullState:
        if self.answer is None:
            self.asked_at = timezone.now()
            self.answer = github.pull_state(self.repository.full_name, self.pr_number, timeout=timeout)
            with transaction.atomic():
                pull = _locked(self.repository, self.pr_number)
                pull.asked_at, pull.asked_known = self.asked_at, self.answer.known
                if self.answer.known and pull.github_updated_at is None:
                    pull.state, pull.draft = self.answer.state, self.answer.draft
                    pull.labels = _bounded_labels(self.answer.labels)
                if self.answer.known:  # where the branch is, and its author: the fork rules need both
                    pull.head_repository = pull.head_repository or self.answer.head_repository
                    pull.author_association = pull.author_association or self.answer.author_association
                if self.answer.known and validators.SHA_RE.fullmatch(self.answer.head_sha):
                    _observe_head(pull, self.answer.head_sha, self.asked_at, not_heads)
                pull.save()
        elif not_heads and self.answer.known and validators.SHA_RE.fullmatch(self.answer.head_sha):
            with transaction.atomic():
                pull = _locked(self.repository, self.pr_number)
                _observe_head(pull, self.answer.head_sha, self.asked_at, not_heads)
                pull.save(update_fields=["head_sha", "head_seen_at", "earlier_heads", "updated_at"])
        return self.answer

    def opt_in_info(self) -> optin.PullInfo | None:
        """What the opt-in rules need: from the webhooks, else from GitHub (asked now, or within ASKED_KEPT);
        None when nobody can say."""
        pull = self.stored()
        if pull is not None and pull.github_updated_at is not None:
            return _info(pull)
        if not github.is_configured():
            return None
        if pull is not None and pull.asked_at is not None and timezone.now() - pull.asked_at < ASKED_KEPT:
            return _info(pull) if pull.asked_known else None
        answer = self.ask_github(timeout=settings.PREVIEWS_STALE_CHECK_TIMEOUT)
        if not answer.known:
            return None
        return optin.PullInfo(open=answer.state == PullRequestState.OPEN, draft=answer.draft,
                              labels=frozenset(answer.labels),
                              command_opt=pull.command_opt if pull is not None else CommandOpt.NONE)


def _info(pull: PullRequest) -> optin.PullInfo:
    return optin.PullInfo(open=pull.state == PullRequestState.OPEN, draft=pull.draft, labels=frozenset(pull.labels),
                          command_opt=pull.command_opt)


def opt_in_refusal(facts: PullRequestFacts) -> str:
    """Why an API request to deploy this PR is refused by the repository's opt-in policy, or ""."""
    repository, pr_number = facts.repository, facts.pr_number
    policy = optin.policy_of(repository)
    if policy.mode == optin.ALL and policy.drafts:
        return ""  # every PR is opted in: nothing to look up
    pull = facts.opt_in_info()
    if pull is None:
        return ""
    # A closed PR is the reaper's business; only the opt-in rules refuse here.
    verdict = optin.decide(policy, optin.PullInfo(open=True, draft=pull.draft, labels=pull.labels,
                                                  command_opt=pull.command_opt))
    return "" if verdict.wanted else f"not opted in: PR #{pr_number} of {repository} gets no preview: {verdict.reason}"


def stale_request_reason(facts: PullRequestFacts, preview: Preview, head_sha: str) -> str:
    """Why a deploy request for `head_sha` is older than the PR's current head, or "" if it is not known to be.

    A late CI run for an earlier push must not replace the preview of a newer one. `preview` is the PR's
    preview as locked by the caller. In order, without GitHub on the path while the answer is known here:

    1. `head_sha` is the preview's own commit: not stale (no lookup at all; every idempotent request).
    2. Unless GitHub was already asked in this request: the PR's head as this service last saw it (webhook
       events ordered by the PR's `updated_at`, and GitHub's earlier answers): `head_sha` is that head, not
       stale; `head_sha` was an earlier head, stale.
    3. Otherwise GitHub is asked (once per request), bounded by PREVIEWS_STALE_CHECK_TIMEOUT; when it cannot
       answer in time the request goes ahead. The requested commit and the preview's own, when they are not
       the head GitHub names, are remembered as earlier heads: the next request for them needs no question.
    """
    if preview.head_sha == head_sha or not github.is_configured():
        return ""
    pr_number = preview.pr_number
    if facts.answer is None:
        known = known_head(facts.stored())
        if known is not None:
            if known.head_sha == head_sha:
                return ""
            if head_sha in known.earlier:
                return _stale_message(head_sha, pr_number, known.head_sha)
    answer = facts.ask_github(timeout=settings.PREVIEWS_STALE_CHECK_TIMEOUT, not_heads=(head_sha, preview.head_sha))
    if not (answer.known and answer.head_sha) or answer.head_sha == head_sha:
        return ""
    return _stale_message(head_sha, pr_number, answer.head_sha)


def _stale_message(head_sha: str, pr_number: int, head: str) -> str:
    return (f"{head_sha[:7]} is not the head of PR #{pr_number} any more (it is {head[:7]}); "
            "a request for an older commit never replaces a newer one")


def head_for_deploy(facts: PullRequestFacts, preview: Preview | None) -> str:
    """The commit a /preview command deploys: the PR's head as known here, else its preview's, else GitHub's
    (when it can be asked); "" when nobody can say."""
    pull = facts.stored()
    sha = (pull.head_sha if pull is not None else "") or (preview.head_sha if preview else "")
    if not sha and github.is_configured():
        sha = facts.ask_github().head_sha
    return sha if validators.SHA_RE.fullmatch(sha or "") else ""


def pull_origin(facts: PullRequestFacts) -> tuple[str, str]:
    """(head repository, the PR author's association) for the fork rules: as recorded from the webhooks, else
    GitHub's answer (asked at most once, and recorded). ("", "") when nobody can say: a fork, then."""
    pull = facts.stored()
    head, association = (pull.head_repository, pull.author_association) if pull is not None else ("", "")
    if (not head or not association) and github.is_configured():
        answer = facts.ask_github()
        if answer.known:
            head, association = head or answer.head_repository, association or answer.author_association
    return head, association
