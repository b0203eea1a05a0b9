"""CI's and the webhook's request for a PR's preview: validated, then created, updated or left unchanged."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from previews import links, policy, selectors, validators
from previews.models import EventAction, Preview, Repository
from previews.rows import Record
from previews.services.errors import PreviewConflict, RateLimited, StaleCommit
from previews.services.github_sync import github_sync_enqueue
from previews.services.pull_requests import PullRequestFacts, opt_in_refusal, stale_request_reason
from previews.services.queue import request_deploy
from previews.services.timeline import Actor, record_event


@dataclass(frozen=True)
class PreviewRequest:
    """What CI (or a webhook) asks for: this commit, these images, optionally these manifests."""

    head_sha: str
    images: tuple[str, ...] = ()
    manifests: str = ""
    ttl_hours: int | None = None
    title: str = ""
    author: str = ""


@dataclass(frozen=True)
class UpsertResult:
    preview: Preview
    created: bool
    deploy_enqueued: bool


class Unchanged:
    """What makes a request change nothing, written once for the locked path and the one-statement paths.

    The preview is up, for the same commit, images and manifests (`same`), and pending, deploying or ready
    (`holds`): a failed preview is deployed again (a retry), a sleeping one woken, a deleted one brought back.
    `condition` is the same test for a statement. All such a request writes is `touched` (title and author
    when given) and `updated_at`: `assignments` for a statement.
    """

    FIELDS = ("desired", "head_sha", "manifests", "images")
    STATUSES = (Preview.Status.PENDING, Preview.Status.DEPLOYING, Preview.Status.READY)

    def __init__(self, request: PreviewRequest, images: dict[str, str]) -> None:
        self.values = dict(zip(self.FIELDS, (Preview.Desired.UP, request.head_sha, request.manifests, images),
                               strict=True))
        self.touched = {name: value for name, value in (("title", request.title), ("author", request.author))
                        if value}

    def same(self, preview: Preview) -> bool:
        return all(getattr(preview, name) == value for name, value in self.values.items())

    def holds(self, preview: Preview) -> bool:
        return preview.status in self.STATUSES and self.same(preview)

    @staticmethod
    @functools.cache
    def condition(alias: str) -> str:
        """The SQL of `holds` for the preview row `alias`; its parameters are `condition_params`."""
        tests = [f'{alias}."{Preview._meta.get_field(name).column}" = %s' + ("::jsonb" if name == "images" else "")
                 for name in Unchanged.FIELDS]
        tests.append(f'{alias}."status" IN ({", ".join(["%s"] * len(Unchanged.STATUSES))})')
        return " AND ".join(tests)

    def condition_params(self) -> list:
        values = [json.dumps(value) if name == "images" else str(value) for name, value in self.values.items()]
        return [*values, *(str(status) for status in self.STATUSES)]

    @staticmethod
    @functools.cache
    def assignments(touched: tuple[str, ...]) -> str:
        """The SQL SET list of an unchanged request that sets `touched`; its parameters are `assignment_params`."""
        return ", ".join(f'"{Preview._meta.get_field(name).column}" = %s' for name in ("updated_at", *touched))

    def assignment_params(self, now: datetime) -> list:
        return [now, *self.touched.values()]


MANIFEST_WINDOW_SECONDS = 60


def manifest_check_admit(repository: Repository) -> None:
    """Count one PUT carrying manifests against the repository's limit per minute (a fixed window, counted in one
    UPDATE, so every web process shares it); RateLimited, before any parsing, when the window is full."""
    limit = repository.manifest_puts_per_minute
    if not limit:
        return
    table = Repository._meta.db_table
    window = f"interval '{MANIFEST_WINDOW_SECONDS} seconds'"
    with connection.cursor() as cursor:
        cursor.execute(
            f"""UPDATE {table} SET
                  manifest_window_count = CASE WHEN manifest_window_start > now() - {window}
                                               THEN manifest_window_count + 1 ELSE 1 END,
                  manifest_window_start = CASE WHEN manifest_window_start > now() - {window}
                                               THEN manifest_window_start ELSE now() END
                WHERE id = %s
                RETURNING manifest_window_count,
                          CEIL(EXTRACT(EPOCH FROM manifest_window_start + {window} - now()))::integer""",
            [repository.pk])
        row = cursor.fetchone()
    if row is not None and row[0] > limit:
        raise RateLimited(f"{repository} accepts {limit} PUTs with manifests per minute (each is parsed and checked); "
                          "retry later, or send the same manifests less often", max(1, row[1]))


def _validate_request(repository: Repository | None, pr_number: int, request: PreviewRequest) -> dict[str, str]:
    """The request's images by name, or ValidationError. Without a repository, only the rules that do not depend
    on one (`preview_touch_by_name` judges `ttl_hours` in its statement and takes no manifests)."""
    errors: dict[str, list[str]] = {}

    def check(field: str, fn, value) -> None:
        try:
            fn(value)
        except ValidationError as exc:
            errors.setdefault(field, []).extend(exc.messages)

    check("pr_number", validators.validate_pr_number, pr_number)
    check("head_sha", validators.validate_sha, request.head_sha)
    for i, image in enumerate(request.images):
        check(f"images[{i}]", validators.validate_image, image)
    if repository is not None and request.ttl_hours is not None and not 1 <= request.ttl_hours <= \
            repository.max_ttl_hours:
        errors["ttl_hours"] = [f"ttl_hours must be between 1 and {repository.max_ttl_hours} for {repository}"]
    if len(request.manifests.encode()) > settings.PREVIEWS_MAX_MANIFEST_BYTES:
        errors["manifests"] = [f"manifests are larger than {settings.PREVIEWS_MAX_MANIFEST_BYTES} bytes"]
    elif request.manifests.strip():
        if repository is None:
            raise ValueError("manifests are judged against a repository's policy: pass the repository")
        manifest_check_admit(repository)
        # Judged now, by the policy the deploy will use, so that a bad bundle is a 422 naming the document and
        # field instead of a failed deploy later.
        refused = policy.bundle_problems(repository, links.namespace_for(repository, pr_number), request.manifests)
        if refused is not None:
            errors["manifests"] = [str(p) for p in refused.problems]
            if refused.total > len(refused.problems):
                errors["manifests"].append(f"and {refused.total - len(refused.problems)} more problems")
    for name in ("title", "author"):
        limit = Preview._meta.get_field(name).max_length
        if len(getattr(request, name)) > limit:
            errors[name] = [f"{name} is longer than {limit} characters"]
    if errors:
        raise ValidationError(errors)
    images: dict[str, str] = {}
    for image in request.images:
        name = validators.image_name(image)
        if name in images and images[name] != image:
            raise ValidationError({"images": [f"image {name} is given twice with different references"]})
        images[name] = image
    return images


def preview_upsert(*, repository: Repository, pr_number: int, request: PreviewRequest, actor: Actor,
                   check_opt_in: bool = False) -> UpsertResult:
    """Create or update a PR's preview and enqueue its deploy when anything changed.

    The same commit, images and manifests again change nothing and enqueue
    nothing, unless the last deploy failed (then it is a retry) or the preview
    sleeps (then it wakes). With `check_opt_in` (a CI request), a request that
    would create or change a preview is refused for a PR the repository's
    opt-in policy leaves out.
    """
    images = _validate_request(repository, pr_number, request)
    unchanged = Unchanged(request, images)
    touched = _upsert_unchanged(repository, pr_number, unchanged)
    if touched is not None:
        return UpsertResult(touched, created=False, deploy_enqueued=False)
    # One look at what is known of the PR for the whole request: GitHub is asked at most once.
    facts = PullRequestFacts(repository, pr_number)
    if check_opt_in:
        refusal = opt_in_refusal(facts)
        if refusal:
            raise PreviewConflict(refusal)
    for attempt in range(2):
        try:
            with transaction.atomic():
                return _upsert_locked(repository, pr_number, request, unchanged, actor, facts)
        except IntegrityError:
            # A concurrent request created the same preview first; the second pass updates it.
            if attempt == 1:
                raise
    raise AssertionError("unreachable")


def _upsert_unchanged(repository: Repository, pr_number: int, unchanged: Unchanged) -> Preview | None:
    """The idempotent request in one statement, or None.

    One conditional UPDATE ... RETURNING: the row lock it takes and its WHERE clause decide "unchanged"
    atomically, as `_upsert_locked` does under SELECT ... FOR UPDATE, and it writes what that path writes for
    an unchanged request. None (nothing updated): the preview does not exist or the request changes
    something; the caller takes the locked path. No stale-commit check is needed: the commit is the
    preview's own.
    """
    sql = (f"UPDATE {Preview._meta.db_table} p SET {Unchanged.assignments(tuple(unchanged.touched))} "
           f'WHERE p."repository_id" = %s AND p."pr_number" = %s AND {Unchanged.condition("p")} RETURNING *')
    params = [*unchanged.assignment_params(timezone.now()), repository.pk, pr_number, *unchanged.condition_params()]
    rows = list(Preview.objects.raw(sql, params))
    if not rows:
        return None
    rows[0].repository = repository
    return rows[0]


@dataclass(frozen=True)
class TouchResult:
    repository_id: int | None  # None: no repository of that name is configured
    preview: Record | None  # the unchanged preview as the API shows it, touched; None: take the locked path


@functools.cache
def _touch_sql(touched: tuple[str, ...]) -> str:
    """`preview_touch_by_name`'s statement for a request that sets `touched`."""
    return (
        f"WITH r AS (SELECT {selectors.API_REPOSITORY.select('r')}, r.\"max_ttl_hours\" "
        f"FROM {Repository._meta.db_table} r "
        f'WHERE {selectors.REPOSITORY_BY_NAME_WHERE} ORDER BY r."owner", r."name" LIMIT 1), '
        f"touched AS (UPDATE {Preview._meta.db_table} p SET {Unchanged.assignments(touched)} FROM r "
        f'WHERE p."repository_id" = r."id" AND p."pr_number" = %s AND {Unchanged.condition("p")} '
        'AND (%s::integer IS NULL OR %s::integer <= r."max_ttl_hours") '
        f"RETURNING {selectors.API_PREVIEW.select('p')}) "
        f"SELECT {selectors.API_REPOSITORY.select('r')}, touched.* FROM r LEFT JOIN touched ON TRUE")


def preview_touch_by_name(owner: str, name: str, pr_number: int, request: PreviewRequest) -> TouchResult:
    """`preview_upsert`'s idempotent case for a repository known by name only, in one statement.

    The API's commonest PUT (CI again for the same commit) finds the repository and touches the unchanged
    preview in one round trip instead of two. The repository is found as `selectors.repository_get` finds it;
    the preview is touched under the same `Unchanged` condition, plus the one repository-dependent rule a
    request without manifests has (`ttl_hours` within the repository's maximum): when anything differs,
    nothing is written, and the caller takes `preview_upsert` with the repository. ValidationError for a request
    that is invalid whatever the repository. Requests with manifests are judged by the repository's policy
    first, so they do not come here (ValueError).
    """
    unchanged = Unchanged(request, _validate_request(None, pr_number, request))
    params = [owner, name, *unchanged.assignment_params(timezone.now()), pr_number, *unchanged.condition_params(),
              request.ttl_hours, request.ttl_hours]
    with connection.cursor() as cursor:
        cursor.execute(_touch_sql(tuple(unchanged.touched)), params)
        row = cursor.fetchone()
    if row is None:
        return TouchResult(None, None)
    width = selectors.API_REPOSITORY.width
    if row[width] is None:  # the preview's id: nothing was touched
        return TouchResult(row[0], None)
    return TouchResult(row[0], selectors.api_preview_record(row[width:] + row[:width]))


def _check_preview_limit(repository: Repository, exclude: Preview | None = None) -> None:
    """Refuse one more live preview beyond the repository's maximum. Call inside the transaction that brings a
    preview up: the repository's row lock makes concurrent checks take turns."""
    Repository.objects.select_for_update().filter(pk=repository.pk).first()
    live = Preview.objects.filter(repository=repository, status__in=Preview.LIVE_STATUSES)
    if exclude is not None:
        live = live.exclude(pk=exclude.pk)
    count = live.count()
    if count >= repository.max_live_previews:
        raise PreviewConflict(f"{repository} already has {count} live previews, its maximum; close or delete "
                              "one first")


def _upsert_locked(repository: Repository, pr_number: int, request: PreviewRequest, unchanged: Unchanged,
                   actor: Actor, facts: PullRequestFacts) -> UpsertResult:
    now = timezone.now()
    images = unchanged.values["images"]
    ttl = request.ttl_hours or repository.default_ttl_hours
    preview = (Preview.objects.select_for_update().select_related("repository")
               .filter(repository=repository, pr_number=pr_number).first())
    if preview is not None:
        # Under the row lock, so no request for another commit can slip in between the check and the write.
        stale = stale_request_reason(facts, preview, request.head_sha)
        if stale:
            raise StaleCommit(stale)
    if preview is None:
        namespace = links.namespace_for(repository, pr_number)
        if namespace in settings.PREVIEWS_PROTECTED_NAMESPACES:
            raise PreviewConflict(f"namespace {namespace!r} is protected; choose another namespace prefix for "
                                  f"{repository}")
        other = Preview.objects.filter(namespace=namespace).exclude(repository=repository).first()
        if other is not None:
            raise PreviewConflict(f"namespace {namespace!r} is already used by {other}; give {repository} its own "
                                  "namespace prefix")
        _check_preview_limit(repository)
        preview = Preview.objects.create(
            repository=repository, pr_number=pr_number, namespace=namespace,
            url=links.preview_url(repository, namespace), head_sha=request.head_sha, images=images,
            manifests=request.manifests, expires_at=now + timedelta(hours=ttl),
            title=request.title, author=request.author, last_activity_at=now,
        )
        record_event(preview, actor, EventAction.CREATED, f"Preview requested for {request.head_sha[:7]}",
                     head_sha=request.head_sha, images=images)
        request_deploy(preview)
        github_sync_enqueue(preview.pk)
        return UpsertResult(preview, created=True, deploy_enqueued=True)

    for name, value in unchanged.touched.items():
        setattr(preview, name, value)
    if unchanged.holds(preview):
        preview.save(update_fields=[*unchanged.touched, "updated_at"])
        return UpsertResult(preview, created=False, deploy_enqueued=False)

    same = unchanged.same(preview)
    action = EventAction.REDEPLOY_REQUESTED if same else EventAction.UPDATED
    if same and preview.status == Preview.Status.SLEEPING:
        action = EventAction.WAKE_REQUESTED
    if preview.desired == Preview.Desired.DOWN or preview.status == Preview.Status.DELETED:
        # Coming back up (a reopened PR, a PUT after a delete) counts against the limit like a new preview.
        _check_preview_limit(repository, exclude=preview)
        action = EventAction.REOPENED
    preview.head_sha, preview.images, preview.manifests = request.head_sha, images, request.manifests
    preview.desired = Preview.Desired.UP
    preview.status, preview.status_message = Preview.Status.PENDING, ""
    preview.generation += 1
    preview.expires_at = max(preview.expires_at, now + timedelta(hours=ttl))
    preview.deleted_at = preview.slept_at = None
    preview.last_activity_at = now
    preview.save()
    record_event(preview, actor, action, f"Deploy of {request.head_sha[:7]} requested", head_sha=request.head_sha,
                 images=images)
    request_deploy(preview)
    github_sync_enqueue(preview.pk)
    return UpsertResult(preview, created=False, deploy_enqueued=True)
