"""Carrying out `/preview` commands from pull request comments (the webhook's `issue_comment` events).

Parsing and the decisions are pure (`previews/commands.py`, `previews/optin.py`); this module
records each command (the per-PR rate limit counts them), checks the commenter's author
association against the repository's trusted list, calls the same services as the dashboard and
the API with the GitHub user as the actor, and answers: a reaction on the comment (+1 done,
-1 refused, confused for a malformed or unknown command), the result in the preview's sticky
comment, and a short reply where there is no sticky comment to show it in (no preview yet,
an outsider, a malformed command, the rate limit). The GitHub calls run in a task after commit,
so GitHub never slows the webhook's answer.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.utils import timezone
from django_q.tasks import async_task

from previews import commands, forks, optin, payloads, selectors, services, validators
from previews.gateways import errors, github
from previews.models import ActorKind, CommandOpt, CommentCommand, Preview, Repository

logger = logging.getLogger(__name__)

ANSWER_TASK = "previews.tasks.answer_comment"
COMMANDS_LOCK = 0x70726363  # ("prcc") serialises the rate-limit count per repository
OK, REFUSED, CONFUSED = "+1", "-1", "confused"


@dataclass(frozen=True)
class Answer:
    reaction: str
    result: str  # what happened, our own words
    reply: str = ""  # a PR comment, when the sticky comment cannot carry the result


def _answer(full_name: str, number: int, comment_id: int, answer: Answer) -> None:
    if github.is_configured():
        transaction.on_commit(lambda: async_task(ANSWER_TASK, full_name, number, comment_id, answer.reaction,
                                                 answer.reply, task_name=f"answer_comment:{comment_id}"))


def answer(full_name: str, number: int, comment_id: int, reaction: str, reply: str = "") -> str:
    """The task: react to the comment, then reply if there is a reply. Best effort: failures are logged."""
    try:
        github.add_reaction(full_name, number, comment_id, reaction)
        if reply:
            github.create_comment(full_name, number, reply)
    except errors.GatewayError as exc:
        logger.warning("answering comment %s on %s#%s failed: %s", comment_id, full_name, number, exc)
        return "failed"
    return "answered"


def handle_comment(repository: Repository, event: payloads.CommentEvent) -> str:
    """Act on one `issue_comment` delivery (its shape checked by `payloads.parse_comment`). Returns the outcome
    for the webhook's log."""
    if event.action != "created":
        return "only new comments carry commands"
    if not event.is_pull_request:
        return "not a pull request"
    parsed = commands.parse(event.body)
    if parsed is None:
        return "not a command"
    number, comment_id = event.number, event.comment_id
    login, association = event.login, event.author_association
    if event.user_type == "Bot" or login.endswith("[bot]"):
        return "comments by bots are not obeyed"
    if not commands.valid_login(login):
        return "the comment has no usable login"
    line = commands.command_line(event.body) or ""
    full_name = repository.full_name

    trusted = validators.parse_associations(repository.command_associations)
    is_trusted = commands.is_trusted(association, trusted)
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [COMMANDS_LOCK, repository.pk])
        since = timezone.now() - timedelta(minutes=settings.PREVIEWS_COMMAND_RATE_WINDOW_MINUTES)
        window = CommentCommand.objects.filter(repository=repository, pr_number=number, received_at__gte=since)
        # Only trusted commenters' commands count against the PR's limit: outsiders cannot use it up.
        recent = (window.filter(association__in=trusted) if is_trusted else window.exclude(association__in=trusted)
                  ).count()
        record = CommentCommand.objects.create(repository=repository, pr_number=number, comment_id=comment_id,
                                               login=login, association=str(association).upper()[:30],
                                               text=line[:200])
    if not is_trusted:
        # Told once per PR and window (the first outsider's command), then refused quietly: a flood of outsider
        # comments costs no GitHub call each.
        if recent == 0:
            reply = (f"@{login} `/preview` commands on {full_name} are obeyed only from "
                     f"{', '.join(sorted(a.lower() for a in trusted)) or 'nobody'}; this comment changed nothing.")
            _answer(full_name, number, comment_id, Answer(REFUSED, "not trusted", reply))
        return _done(record, f"refused: author association {str(association)[:30]!r} is not trusted")

    if commands.rate_limited(recent, settings.PREVIEWS_COMMAND_RATE_LIMIT):
        outcome = "rate limited"
        if recent == settings.PREVIEWS_COMMAND_RATE_LIMIT:  # tell once per window, then stay quiet
            _answer(full_name, number, comment_id, Answer(REFUSED, outcome, (
                f"@{login} this PR had {recent} `/preview` commands in the last "
                f"{settings.PREVIEWS_COMMAND_RATE_WINDOW_MINUTES} minutes, the most allowed; "
                "further commands are ignored until the window has passed.")))
        return _done(record, outcome)

    if isinstance(parsed, commands.Malformed):
        _answer(full_name, number, comment_id, Answer(CONFUSED, parsed.problem,
                                                      commands.help_reply(login, parsed.problem)))
        return _done(record, f"malformed: {parsed.problem}")

    actor = services.Actor(ActorKind.GITHUB, login)
    preview = selectors.preview_get(repository, number)
    result = _run(parsed, repository, number, preview, event, actor)
    shown_on_sticky = preview is not None and preview.github_comment_id and parsed.name != commands.HELP
    if preview is not None:
        services.preview_record_command(preview_id=preview.pk, actor=actor, command=parsed.display(),
                                        result=result.result, ok=result.reaction == OK, comment_id=comment_id,
                                        reason=parsed.reason)
    reply = result.reply or ("" if shown_on_sticky else f"@{login} `{parsed.display()}`: {result.result}")
    _answer(full_name, number, comment_id, Answer(result.reaction, result.result, reply))
    return _done(record, f"{parsed.display()}: {result.result}")


def _done(record: CommentCommand, outcome: str) -> str:
    CommentCommand.objects.filter(pk=record.pk).update(outcome=outcome[:300])
    return outcome


def _live(preview: Preview | None) -> bool:
    return preview is not None and preview.desired == Preview.Desired.UP and preview.is_live


def _run(command: commands.Command, repository: Repository, number: int, preview: Preview | None,
         event: payloads.CommentEvent, actor: services.Actor) -> Answer:
    name = command.name
    if name == commands.HELP:
        return Answer(OK, "help", commands.HELP_TEXT)
    if name == commands.CREATE:
        return _create(repository, number, preview, event, actor)
    if name == commands.DELETE:
        services.pull_request_set_opt(repository=repository, pr_number=number, opt=CommandOpt.OUT)
        if not _live(preview):
            return Answer(OK, "no preview to delete; none is created until `/preview`")
        services.preview_destroy(preview=preview, actor=actor, reason=f"Deleted by @{actor.name} with /preview delete")
        return Answer(OK, "deleting the preview; `/preview` brings it back")
    if not _live(preview):
        return Answer(REFUSED, f"PR #{number} has no live preview")
    try:
        if name == commands.EXTEND:
            updated = services.preview_extend(preview=preview, hours=command.hours,
                                              reason=command.reason or f"/preview extend by @{actor.name}",
                                              actor=actor)
            return Answer(OK, f"extended by {command.hours} h, until {updated.expires_at:%Y-%m-%d %H:%M} UTC")
        if name == commands.REDEPLOY:
            services.preview_redeploy(preview=preview, actor=actor)
            return Answer(OK, f"redeploying {preview.head_sha[:7]}")
        if name in (commands.PIN, commands.UNPIN):
            services.preview_pin(preview=preview, pinned=name == commands.PIN, actor=actor)
            return Answer(OK, "pinned: it never expires" if name == commands.PIN else "unpinned: it expires again")
        if name == commands.SLEEP:
            was = preview.status
            services.preview_sleep(preview=preview, actor=actor, reason=f"/preview sleep by @{actor.name}")
            return Answer(OK, "already asleep" if was == Preview.Status.SLEEPING else "going to sleep")
        if name == commands.WAKE:
            was = preview.status
            services.preview_wake(preview=preview, actor=actor)
            return Answer(OK, "waking up" if was == Preview.Status.SLEEPING else "it is awake")
    except services.PreviewConflict as exc:
        return Answer(REFUSED, str(exc))
    except ValidationError as exc:
        return Answer(REFUSED, "; ".join(exc.messages))
    raise AssertionError(f"unhandled command {name}")


def _create(repository: Repository, number: int, preview: Preview | None, event: payloads.CommentEvent,
            actor: services.Actor) -> Answer:
    if event.state not in ("", "open"):
        return Answer(REFUSED, f"PR #{number} is closed")
    row = services.pull_request_set_opt(repository=repository, pr_number=number, opt=CommandOpt.IN)
    draft = row.draft if row.github_updated_at else event.draft
    verdict = optin.decide(optin.policy_of(repository), optin.PullInfo(open=True, draft=draft,
                                                                        command_opt=row.command_opt))
    if not verdict.wanted:
        return Answer(REFUSED, verdict.reason)
    if _live(preview):
        if preview.status == Preview.Status.SLEEPING:
            services.preview_wake(preview=preview, actor=actor)
            return Answer(OK, "the preview was asleep; waking up")
        return Answer(OK, f"the preview exists already ({preview.status})")
    if not repository.image_template:
        return Answer(OK, "opted in: CI deploys the preview on its next run")
    facts = services.PullRequestFacts(repository, number)
    head_repository, _ = services.pull_origin(facts)
    # A fork's branch: the repository must allow fork previews, and the commenter vouch for it as an owner,
    # member or collaborator (whatever the command associations allow for other commands).
    refusal = forks.refusal(repository, head_repository, event.author_association, who="a commenter")
    if refusal:
        return Answer(REFUSED, refusal)
    sha = services.head_for_deploy(facts, preview)
    if not sha:
        return Answer(REFUSED, "the PR's head commit is not known yet (GitHub could not be asked); try again")
    moved = _moved_since(facts, sha, event) if forks.is_fork(repository.full_name, head_repository) else ""
    if moved:
        return Answer(REFUSED, moved)
    image = payloads.image_reference(repository.image_template, number, sha)
    try:
        services.preview_upsert(repository=repository, pr_number=number, actor=actor,
                                request=services.PreviewRequest(head_sha=sha, images=(image,)))
    except services.PreviewConflict as exc:
        return Answer(REFUSED, str(exc))
    except ValidationError as exc:
        return Answer(REFUSED, "; ".join(exc.messages))
    return Answer(OK, f"creating the preview of {sha[:7]}")


def _moved_since(facts: services.PullRequestFacts, sha: str, event: payloads.CommentEvent) -> str:
    """A fork's head that was first seen after the comment was written is not what the commenter vouched for."""
    pull = facts.stored()
    if event.created_at is None or pull is None or pull.head_sha != sha or pull.head_seen_at is None:
        return ""
    if pull.head_seen_at > event.created_at:
        return (f"the fork's branch moved to {sha[:7]} after this comment was written; review it and comment "
                "`/preview` again")
    return ""
