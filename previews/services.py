"""State changes. Each public function is one transaction and one story."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone
from django_q.models import Schedule, Task
from django_q.tasks import async_task, schedule

from previews import github, links, locks, policy, selectors, tokens, validators
from previews.models import ActorKind, ApiToken, EventAction, Preview, PreviewEvent, PullRequestState, Repository
from previews.rows import Record

DEPLOY_TASK = "previews.tasks.deploy_preview"
TEARDOWN_TASK = "previews.tasks.teardown_preview"
GITHUB_SYNC_TASK = "previews.tasks.sync_github"
GITHUB_SYNC_MANY_TASK = "previews.tasks.sync_github_many"
GITHUB_SYNC_BATCH = 50  # previews per batched sync task (a mass deletion queues 20 tasks per 1000, not 1000)
SLEEP_TASK = "previews.tasks.sleep_preview"
MAX_STATUS_MESSAGE = 4000  # characters kept of a status message; the PR comment and the API show it


@transaction.atomic
def token_create(
    *, name: str, repository: Repository | None, created_by: AbstractBaseUser | None = None
) -> tuple[ApiToken, str]:
    """Create a token and return it with its plaintext, which is never stored: show it once."""
    new = tokens.generate_token()
    token = ApiToken(name=name, repository=repository, prefix=new.prefix, token_hash=new.token_hash,
                     created_by=created_by)
    token.full_clean()
    token.save()
    return token, new.plaintext


@dataclass
class _CachedToken:
    token: ApiToken
    checked_at: float  # time.monotonic() of the database read that found it active


class TokenCache:
    """A per-process cache of active static tokens, by the SHA-256 of their plaintext.

    An entry is trusted for `settings.PREVIEWS_TOKEN_CACHE_SECONDS` after the database read that found the
    token active; then the row is read again. So a token revoked (or deleted, or re-scoped) in the admin or by
    another process is refused by every web process at most that many seconds later; `token_revoke` in this
    process drops the entry at once. Unknown and revoked tokens are never cached: each is a database read.
    """

    MAX_ENTRIES = 10_000  # far more than the tokens that exist; a full cache starts again empty

    def __init__(self, clock=time.monotonic) -> None:
        self._entries: dict[str, _CachedToken] = {}
        self._lock = threading.Lock()
        self.clock = clock

    def get(self, token_hash: str) -> ApiToken | None:
        entry = self._entries.get(token_hash)
        if entry is None or self.clock() - entry.checked_at >= settings.PREVIEWS_TOKEN_CACHE_SECONDS:
            return None
        return entry.token

    def put(self, token_hash: str, token: ApiToken, checked_at: float) -> None:
        if settings.PREVIEWS_TOKEN_CACHE_SECONDS <= 0:
            return
        with self._lock:
            if len(self._entries) >= self.MAX_ENTRIES:
                self._entries.clear()
            self._entries[token_hash] = _CachedToken(token, checked_at)

    def forget(self, token_pk: int) -> None:
        with self._lock:
            for key in [k for k, entry in self._entries.items() if entry.token.pk == token_pk]:
                del self._entries[key]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


TOKEN_CACHE = TokenCache()
LAST_USED_PRECISION = timedelta(minutes=1)


def token_authenticate(plaintext: str) -> ApiToken | None:
    """The active token this plaintext belongs to, or None. Records when it was last used.

    Served from TOKEN_CACHE while its entry is fresh (no query); otherwise one query. `last_used_at` is
    written at most once a minute per token and process (a minute's precision is plenty).
    """
    prefix = tokens.parse_prefix(plaintext)
    if prefix is None:
        return None
    token_hash = tokens.hash_token(plaintext)
    # A hit is an exact match of the presented token's SHA-256 with the hash of a token the database verified.
    token = TOKEN_CACHE.get(token_hash)
    if token is None:
        checked_at = TOKEN_CACHE.clock()
        token = ApiToken.objects.select_related("repository").filter(prefix=prefix, revoked_at=None).first()
        if token is None or not tokens.token_matches(plaintext, token.token_hash):
            return None
        TOKEN_CACHE.put(token_hash, token, checked_at)
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at > LAST_USED_PRECISION:
        # Set first, so that concurrent requests of this process sharing the cached token skip the write.
        token.last_used_at = now
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token


def token_revoke(token: ApiToken) -> None:
    ApiToken.objects.filter(pk=token.pk, revoked_at=None).update(revoked_at=timezone.now())
    TOKEN_CACHE.forget(token.pk)


# --- previews -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Actor:
    kind: ActorKind
    name: str
    url: str = ""  # e.g. the GitHub Actions run of a workflow actor; kept in the event's details

    @classmethod
    def system(cls) -> Actor:
        return cls(ActorKind.SYSTEM, "worker")


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


class PreviewConflict(Exception):
    """The request cannot be carried out in the current state (HTTP 409)."""


class StaleCommit(PreviewConflict):
    """The request is for a commit older than the PR's current head (HTTP 409; the webhook ignores it)."""


def _event(preview: Preview, actor: Actor, action: EventAction, message: str = "", **details) -> PreviewEvent:
    if actor.url:
        details["actor_url"] = actor.url
    return PreviewEvent.objects.create(
        preview=preview, actor_kind=actor.kind, actor=actor.name[:150], action=action, message=message,
        details=details, generation=preview.generation,
    )


def _event_of(preview_id: int, generation: int, actor: Actor, action: EventAction, message: str = "",
              **details) -> PreviewEvent:
    """`_event` for a preview just updated where it was at `generation`: no need to read it back."""
    return _event(Preview(pk=preview_id, generation=generation), actor, action, message, **details)


def _enqueue(task: str, preview: Preview) -> None:
    # After commit, so a worker never sees a generation the database does not hold yet.
    preview_id, generation = preview.pk, preview.generation
    transaction.on_commit(lambda: async_task(task, preview_id, generation,
                                             task_name=f"{task.rsplit('.', 1)[1]}:{preview_id}:{generation}"))


def _request_deploy(preview: Preview) -> None:
    """Queue the preview's deploy task, or leave it waiting for one of its repository's deploy slots.

    A repository has PREVIEWS_DEPLOY_SLOTS deploy tasks in the queue at most, so one repository's flood
    of pushes cannot keep every other repository's deploys waiting behind it. A waiting preview is
    queued when a slot frees (`deploy_slots_fill`). Must run inside the transaction that changed it.
    """
    if preview.deploy_queued_at is not None:
        # Its task is still queued, for an older generation: that one will find itself stale.
        Preview.objects.filter(pk=preview.pk).update(next_attempt_at=None)
        _enqueue(DEPLOY_TASK, preview)
        return
    locks.repository_slots_lock(preview.repository_id)
    in_use = Preview.objects.filter(repository_id=preview.repository_id, deploy_queued_at__isnull=False).count()
    if in_use < settings.PREVIEWS_DEPLOY_SLOTS:
        preview.deploy_queued_at = timezone.now()
        Preview.objects.filter(pk=preview.pk).update(deploy_queued_at=preview.deploy_queued_at, next_attempt_at=None)
        _enqueue(DEPLOY_TASK, preview)
    else:
        message = (f"Waiting for a deploy slot: {in_use} deploys of {preview.repository} are queued "
                   f"(at most {settings.PREVIEWS_DEPLOY_SLOTS} at a time)")
        Preview.objects.filter(pk=preview.pk).update(status_message=message, next_attempt_at=None)


def deploy_slots_fill(repository_id: int) -> int:
    """Queue the deploys of previews waiting for a slot, oldest first, as far as slots are free."""
    now = timezone.now()
    with transaction.atomic():
        locks.repository_slots_lock(repository_id)
        free = settings.PREVIEWS_DEPLOY_SLOTS - Preview.objects.filter(
            repository_id=repository_id, deploy_queued_at__isnull=False).count()
        if free <= 0:
            return 0
        waiting = list(Preview.objects.select_for_update(skip_locked=True).filter(
            repository_id=repository_id, desired=Preview.Desired.UP, status=Preview.Status.PENDING,
            deploy_queued_at=None).filter(Q(next_attempt_at=None) | Q(next_attempt_at__lte=now))
            .order_by("updated_at", "pk")[:free])
        for preview in waiting:
            Preview.objects.filter(pk=preview.pk).update(deploy_queued_at=now, next_attempt_at=None)
            _enqueue(DEPLOY_TASK, preview)
    return len(waiting)


def github_sync_enqueue(preview_id: int, expiry_warning: bool = False) -> None:
    """Tell the PR about the preview's state, after commit, in a task of its own."""
    if github.is_configured():
        transaction.on_commit(lambda: async_task(GITHUB_SYNC_TASK, preview_id, expiry_warning,
                                                 task_name=f"sync_github:{preview_id}"))


def github_sync_enqueue_many(preview_ids: list[int]) -> None:
    """Tell many PRs, after commit, in tasks of GITHUB_SYNC_BATCH previews each (each one synced as alone)."""
    ids = sorted(set(preview_ids))
    if not ids or not github.is_configured():
        return
    batches = [ids[i:i + GITHUB_SYNC_BATCH] for i in range(0, len(ids), GITHUB_SYNC_BATCH)]

    def enqueue() -> None:
        for batch in batches:
            async_task(GITHUB_SYNC_MANY_TASK, batch, task_name=f"sync_github_many:{batch[0]}:{len(batch)}")

    transaction.on_commit(enqueue)


def github_sync_retry(preview_id: int, delay: timedelta) -> None:
    """A one-off retry of the GitHub sync after `delay` (the reaper also retries every cycle)."""
    schedule(GITHUB_SYNC_TASK, preview_id, name=f"github-retry-{preview_id}-{timezone.now().timestamp():.0f}",
             schedule_type=Schedule.ONCE, next_run=timezone.now() + delay, repeats=1)


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
        # Judged now, by the policy the deploy will use, so that a bad bundle is a 422 naming the document and
        # field instead of a failed deploy later.
        refused = policy.bundle_problems(repository, links.namespace_for(repository, pr_number), request.manifests)
        if refused is not None:
            errors["manifests"] = [str(p) for p in refused.problems]
            if refused.total > len(refused.problems):
                errors["manifests"].append(f"and {refused.total - len(refused.problems)} more problems")
    if len(request.title) > 300:
        errors["title"] = ["title is longer than 300 characters"]
    if len(request.author) > 39:
        errors["author"] = ["author is longer than 39 characters"]
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
    unchanged = _upsert_unchanged(repository, pr_number, request, images)
    if unchanged is not None:
        return UpsertResult(unchanged, created=False, deploy_enqueued=False)
    if check_opt_in:
        refusal = selectors.opt_in_refusal(repository, pr_number)
        if refusal:
            raise PreviewConflict(refusal)
    for attempt in range(2):
        try:
            with transaction.atomic():
                return _upsert_locked(repository, pr_number, request, images, actor)
        except IntegrityError:
            # A concurrent request created the same preview first; the second pass updates it.
            if attempt == 1:
                raise
    raise AssertionError("unreachable")


def _upsert_unchanged(repository: Repository, pr_number: int, request: PreviewRequest,
                      images: dict[str, str]) -> Preview | None:
    """The idempotent request (same commit, images and manifests; up, neither failed nor asleep) in one statement,
    or None.

    One conditional UPDATE ... RETURNING: the row lock it takes and its WHERE clause decide "unchanged"
    atomically, as `_upsert_locked` does under SELECT ... FOR UPDATE, and it only touches title, author and
    updated_at, as that path does for an unchanged request. None (nothing updated): the preview does not
    exist or the request changes something; the caller takes the locked path. No stale-commit check is
    needed: the commit is the preview's own.
    """
    table = Preview._meta.db_table
    assignments, params = ["updated_at = %s"], [timezone.now()]
    for column, value in (("title", request.title), ("author", request.author)):
        if value:
            assignments.append(f"{column} = %s")
            params.append(value)
    params += [repository.pk, pr_number, Preview.Desired.UP.value, Preview.Status.PENDING.value,
               Preview.Status.DEPLOYING.value, Preview.Status.READY.value, request.head_sha, request.manifests,
               json.dumps(images)]
    sql = (f"UPDATE {table} SET {', '.join(assignments)} WHERE repository_id = %s AND pr_number = %s "
           "AND desired = %s AND status IN (%s, %s, %s) AND head_sha = %s AND manifests = %s "
           "AND images = %s::jsonb RETURNING *")
    rows = list(Preview.objects.raw(sql, params))
    if not rows:
        return None
    rows[0].repository = repository
    return rows[0]


@dataclass(frozen=True)
class TouchResult:
    repository_id: int | None  # None: no repository of that name is configured
    preview: Record | None  # the unchanged preview as the API shows it, touched; None: take the locked path


def _touch_sql(title: bool, author: bool) -> str:
    """`preview_touch_by_name`'s statement, setting title and author when given."""
    assignments = ['"updated_at" = %s'] + ['"title" = %s'] * title + ['"author" = %s'] * author
    return (
        f"WITH r AS (SELECT {selectors.API_REPOSITORY.select('r')}, r.\"max_ttl_hours\" "
        f"FROM {Repository._meta.db_table} r "
        f'WHERE {selectors.REPOSITORY_BY_NAME_WHERE} ORDER BY r."owner", r."name" LIMIT 1), '
        f"touched AS (UPDATE {Preview._meta.db_table} p SET {', '.join(assignments)} FROM r "
        'WHERE p."repository_id" = r."id" AND p."pr_number" = %s AND p."desired" = %s '
        'AND p."status" IN (%s, %s, %s) AND p."head_sha" = %s AND p."manifests" = %s AND p."images" = %s::jsonb '
        'AND (%s::integer IS NULL OR %s::integer <= r."max_ttl_hours") '
        f"RETURNING {selectors.API_PREVIEW.select('p')}) "
        f"SELECT {selectors.API_REPOSITORY.select('r')}, touched.* FROM r LEFT JOIN touched ON TRUE")


_TOUCH_SQL: dict[tuple[bool, bool], str] = {}


def preview_touch_by_name(owner: str, name: str, pr_number: int, request: PreviewRequest) -> TouchResult:
    """`preview_upsert`'s idempotent case for a repository known by name only, in one statement.

    The API's commonest PUT (CI again for the same commit) finds the repository and touches the unchanged
    preview in one round trip instead of two. The repository is found as `selectors.repository_get` finds it;
    the preview is touched under exactly `_upsert_unchanged`'s conditions, plus the one repository-dependent
    rule a request without manifests has (`ttl_hours` within the repository's maximum): when anything differs,
    nothing is written, and the caller takes `preview_upsert` with the repository. ValidationError for a request
    that is invalid whatever the repository. Requests with manifests are judged by the repository's policy
    first, so they do not come here (ValueError).
    """
    images = _validate_request(None, pr_number, request)
    sets = (bool(request.title), bool(request.author))
    sql = _TOUCH_SQL.get(sets) or _TOUCH_SQL.setdefault(sets, _touch_sql(*sets))
    params = [owner, name, timezone.now(), *(value for value in (request.title, request.author) if value),
              pr_number, Preview.Desired.UP.value, Preview.Status.PENDING.value, Preview.Status.DEPLOYING.value,
              Preview.Status.READY.value, request.head_sha, request.manifests, json.dumps(images), request.ttl_hours,
              request.ttl_hours]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
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


def _upsert_locked(repository, pr_number, request, images, actor) -> UpsertResult:
    now = timezone.now()
    ttl = request.ttl_hours or repository.default_ttl_hours
    preview = (Preview.objects.select_for_update().select_related("repository")
               .filter(repository=repository, pr_number=pr_number).first())
    if preview is not None:
        # Under the row lock, so no request for another commit can slip in between the check and the write.
        stale = selectors.stale_request_reason(repository, preview, request.head_sha)
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
        _event(preview, actor, EventAction.CREATED, f"Preview requested for {request.head_sha[:7]}",
               head_sha=request.head_sha, images=images)
        _request_deploy(preview)
        github_sync_enqueue(preview.pk)
        return UpsertResult(preview, created=True, deploy_enqueued=True)

    unchanged = (preview.desired == Preview.Desired.UP and preview.head_sha == request.head_sha
                 and preview.images == images and preview.manifests == request.manifests)
    if request.title:
        preview.title = request.title
    if request.author:
        preview.author = request.author
    # A request for a sleeping preview wakes it, even for the same commit.
    if unchanged and preview.status not in (Preview.Status.FAILED, Preview.Status.SLEEPING):
        preview.save(update_fields=["title", "author", "updated_at"])
        return UpsertResult(preview, created=False, deploy_enqueued=False)

    action = EventAction.REDEPLOY_REQUESTED if unchanged else EventAction.UPDATED
    if unchanged and preview.status == Preview.Status.SLEEPING:
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
    _event(preview, actor, action, f"Deploy of {request.head_sha[:7]} requested", head_sha=request.head_sha,
           images=images)
    _request_deploy(preview)
    github_sync_enqueue(preview.pk)
    return UpsertResult(preview, created=False, deploy_enqueued=True)


def preview_redeploy(*, preview: Preview, actor: Actor) -> Preview:
    """Deploy the same commit again (after a failure, or to reset the environment)."""
    with transaction.atomic():
        preview = Preview.objects.select_for_update().get(pk=preview.pk)
        if preview.desired == Preview.Desired.DOWN:
            raise PreviewConflict(f"{preview} is being deleted; it cannot be redeployed")
        preview.generation += 1
        preview.status, preview.status_message = Preview.Status.PENDING, ""
        preview.last_activity_at, preview.slept_at = timezone.now(), None
        preview.save()
        _event(preview, actor, EventAction.REDEPLOY_REQUESTED, f"Redeploy of {preview.head_sha[:7]} requested")
        _request_deploy(preview)
        github_sync_enqueue(preview.pk)
    return preview


def preview_destroy(*, preview: Preview, actor: Actor, reason: str = "") -> Preview:
    """Ask for the preview's namespace to go. Idempotent: a second call changes nothing."""
    with transaction.atomic():
        preview = Preview.objects.select_for_update().get(pk=preview.pk)
        if preview.desired != Preview.Desired.DOWN:
            _destroy_locked(preview, actor, reason)
    return preview


def _destroy_locked(preview: Preview, actor: Actor, reason: str) -> None:
    """Record desired state down and enqueue the teardown; the caller holds the row lock in its transaction."""
    held_slot = preview.deploy_queued_at is not None
    preview.desired = Preview.Desired.DOWN
    preview.status, preview.status_message = Preview.Status.DELETING, reason
    preview.generation += 1
    preview.deploy_queued_at = preview.next_attempt_at = None
    preview.save()
    _event(preview, actor, EventAction.DESTROY_REQUESTED, reason or "Preview deletion requested")
    _enqueue(TEARDOWN_TASK, preview)
    github_sync_enqueue(preview.pk)
    if held_slot:
        # Its queued deploy is now stale: give the slot to the next preview waiting for one.
        repository_id = preview.repository_id
        transaction.on_commit(lambda: deploy_slots_fill(repository_id))


def preview_reset_data(*, preview: Preview, actor: Actor) -> Preview:
    """Reset the preview's data and deploy again: the database is copied again from its template, the schema
    recreated, the in-namespace seed run again; the migrate Job runs in every mode, and the preview is
    ready once it completed."""
    with transaction.atomic():
        preview = Preview.objects.select_for_update().select_related("repository").get(pk=preview.pk)
        if preview.desired == Preview.Desired.DOWN:
            raise PreviewConflict(f"{preview} is being deleted; its data cannot be reset")
        if preview.repository.data_mode == Repository.DataMode.NONE:
            raise PreviewConflict(f"{preview.repository} gives its previews no data to reset (data mode none)")
        preview.generation += 1
        preview.data_reset_generation = preview.generation
        preview.status, preview.status_message = Preview.Status.PENDING, ""
        # A reset is a deploy: it wakes a sleeping preview and restarts the idle clock.
        preview.last_activity_at, preview.slept_at = timezone.now(), None
        preview.save()
        _event(preview, actor, EventAction.DATA_RESET_REQUESTED,
               f"Reset of the {preview.repository.data_mode} data requested")
        _request_deploy(preview)
        github_sync_enqueue(preview.pk)
    return preview


def preview_extend(*, preview: Preview, hours: int, reason: str, actor: Actor) -> Preview:
    """Push expiry out by `hours` (from now or the current expiry, whichever is later), capped by the repository."""
    errors: dict[str, list[str]] = {}
    if isinstance(hours, bool) or not isinstance(hours, int) or not 1 <= hours <= validators.MAX_TTL_HOURS:
        errors["hours"] = [f"hours must be a whole number from 1 to {validators.MAX_TTL_HOURS}"]
    if not reason or not reason.strip():
        errors["reason"] = ["say why the preview is needed for longer"]
    if errors:
        raise ValidationError(errors)
    with transaction.atomic():
        preview = Preview.objects.select_for_update().select_related("repository").get(pk=preview.pk)
        if preview.desired == Preview.Desired.DOWN:
            raise PreviewConflict(f"{preview} is being deleted; it cannot be extended")
        now = timezone.now()
        cap = now + timedelta(hours=preview.repository.max_ttl_hours)
        wanted = max(preview.expires_at, now) + timedelta(hours=hours)
        if wanted > cap:
            raise ValidationError({"hours": [
                f"that would run past the maximum of {preview.repository.max_ttl_hours} hours from now "
                f"({cap:%Y-%m-%d %H:%M} UTC)"]})
        previous = preview.expires_at
        preview.expires_at, preview.last_activity_at = wanted, now
        preview.save(update_fields=["expires_at", "last_activity_at", "updated_at"])
        _event(preview, actor, EventAction.EXTENDED, reason.strip(), hours=hours,
               previous_expires_at=previous.isoformat(), expires_at=wanted.isoformat())
        github_sync_enqueue(preview.pk)
    return preview


def preview_pin(*, preview: Preview, pinned: bool, actor: Actor) -> Preview:
    with transaction.atomic():
        preview = Preview.objects.select_for_update().get(pk=preview.pk)
        if preview.pinned != pinned:
            preview.pinned = pinned
            preview.save(update_fields=["pinned", "updated_at"])
            _event(preview, actor, EventAction.PINNED if pinned else EventAction.UNPINNED)
            github_sync_enqueue(preview.pk)
    return preview


# --- sleep and wake (previews/sleep.py scales the namespace; a wake is a deploy) ---------------


def preview_sleep(*, preview: Preview, actor: Actor, reason: str = "") -> Preview:
    """Scale the preview's workloads to zero (in a task). Idempotent for a sleeping preview.

    Only a ready or failed preview sleeps: one that is deploying has work in flight, and a new
    generation (a push, a close, a wake) makes a queued sleep task stale.
    """
    with transaction.atomic():
        preview = Preview.objects.select_for_update().get(pk=preview.pk)
        if preview.desired == Preview.Desired.DOWN:
            raise PreviewConflict(f"{preview} is being deleted; it cannot sleep")
        if preview.status == Preview.Status.SLEEPING:
            return preview
        if preview.status not in (Preview.Status.READY, Preview.Status.FAILED):
            raise PreviewConflict(f"{preview} is {preview.status}; only a ready or failed preview can sleep")
        preview.generation += 1
        preview.status, preview.status_message = Preview.Status.SLEEPING, "Going to sleep: scaling to zero"
        preview.slept_at = None
        preview.save()
        _event(preview, actor, EventAction.SLEEP_REQUESTED, reason or "Sleep requested")
        _enqueue(SLEEP_TASK, preview)
        github_sync_enqueue(preview.pk)
    return preview


def preview_slept(*, preview_id: int, generation: int, workloads: dict[str, int]) -> bool:
    """The sleep task scaled everything to zero; only for the generation that asked for it."""
    now = timezone.now()
    message = (f"Asleep since {now:%Y-%m-%d %H:%M} UTC: {len(workloads)} workloads scaled to zero; a push, "
               "/preview wake or the dashboard wakes it")
    with transaction.atomic():
        updated = Preview.objects.filter(pk=preview_id, generation=generation, desired=Preview.Desired.UP,
                                         status=Preview.Status.SLEEPING).update(
            slept_at=now, observed_generation=generation, status_message=message, updated_at=now)
        if updated:
            _event_of(preview_id, generation, Actor.system(), EventAction.SLEPT, message, replicas=workloads)
            github_sync_enqueue(preview_id)
    return bool(updated)


def preview_sleep_retry(*, preview_id: int) -> bool:
    """Queue the sleep task again for a preview whose scaling to zero did not finish."""
    with transaction.atomic():
        preview = Preview.objects.select_for_update().filter(
            pk=preview_id, desired=Preview.Desired.UP, status=Preview.Status.SLEEPING, slept_at=None).first()
        if preview is None:
            return False
        Preview.objects.filter(pk=preview_id).update(updated_at=timezone.now())
        _enqueue(SLEEP_TASK, preview)
    return True


def preview_wake(*, preview: Preview, actor: Actor) -> Preview:
    """Bring a sleeping preview back: a deploy of the same commit, which restores the remembered replicas
    and becomes ready through the watcher like any deploy. For a preview that is awake it only restarts
    the idle clock."""
    with transaction.atomic():
        preview = Preview.objects.select_for_update().get(pk=preview.pk)
        if preview.desired == Preview.Desired.DOWN:
            raise PreviewConflict(f"{preview} is being deleted; it cannot be woken")
        now = timezone.now()
        if preview.status != Preview.Status.SLEEPING:
            Preview.objects.filter(pk=preview.pk).update(last_activity_at=now)
            preview.last_activity_at = now
            return preview
        preview.generation += 1
        preview.status, preview.status_message = Preview.Status.PENDING, "Waking up"
        preview.last_activity_at, preview.slept_at = now, None
        preview.save()
        _event(preview, actor, EventAction.WAKE_REQUESTED, "Wake requested: restoring the workloads' replicas")
        _request_deploy(preview)
        github_sync_enqueue(preview.pk)
    return preview


def preview_touch(*, preview_id: int) -> None:
    """Activity on the preview (a PR command): restart its idle clock."""
    Preview.objects.filter(pk=preview_id).update(last_activity_at=timezone.now())


def preview_record_command(*, preview_id: int, actor: Actor, command: str, result: str, ok: bool,
                           comment_id: int, reason: str = "") -> None:
    """A /preview command and its result: an event by the GitHub user, and the line the PR comment shows."""
    now = timezone.now()
    last = {"command": command, "user": actor.name, "result": result[:300], "ok": ok, "at": now.isoformat()}
    with transaction.atomic():
        if not Preview.objects.filter(pk=preview_id).update(last_command=last, last_activity_at=now):
            return
        preview = Preview.objects.get(pk=preview_id)
        _event(preview, actor, EventAction.COMMAND, f"{command}: {result}", comment_id=comment_id, ok=ok,
               **({"reason": reason} if reason else {}))
        github_sync_enqueue(preview_id)


# --- what the webhooks say about pull requests (opt-in) ------------------------------------------


def pull_request_record(*, repository: Repository, pr_number: int, state: str, draft: bool, labels: list[str],
                        head_sha: str = "", github_updated_at=None, reset_opt: bool = False) -> PullRequestState:
    """Store a PR's state from a webhook payload, unless what is stored is newer (deliveries come out of order).

    `reset_opt` (the opt-in label was added or removed) clears a /preview or /preview delete override.
    """
    labels = sorted({str(label)[:100] for label in labels})[:100]
    with transaction.atomic():
        row, _ = PullRequestState.objects.select_for_update().get_or_create(repository=repository,
                                                                             pr_number=pr_number)
        if row.github_updated_at and github_updated_at and github_updated_at < row.github_updated_at:
            return row
        row.state, row.draft, row.labels = state, draft, labels
        row.head_sha = head_sha if validators.SHA_RE.fullmatch(head_sha or "") else row.head_sha
        row.github_updated_at = github_updated_at or row.github_updated_at
        if reset_opt:
            row.command_opt = ""
        row.save()
    return row


def pull_request_set_opt(*, repository: Repository, pr_number: int, opt: str) -> None:
    """/preview ("in") or /preview delete ("out"): an explicit wish that overrides the label."""
    PullRequestState.objects.update_or_create(repository=repository, pr_number=pr_number,
                                              defaults={"command_opt": opt})


# --- status changes made by the workers -----------------------------------------------------


def preview_set_status(*, preview_id: int, generation: int, status: str, action: EventAction, message: str = "",
                       **details) -> bool:
    """Record a task's progress, but only for the generation it works on: a stale task changes nothing."""
    now = timezone.now()
    if len(message) > MAX_STATUS_MESSAGE:
        message = message[: MAX_STATUS_MESSAGE - 30] + f" … ({len(message)} characters in all)"
    fields: dict = {"status": status, "status_message": message, "updated_at": now}
    if status == Preview.Status.READY:
        fields["ready_at"] = now
    if status in (Preview.Status.READY, Preview.Status.FAILED, Preview.Status.DELETED):
        fields["observed_generation"] = generation
    if status == Preview.Status.DELETED:
        fields["deleted_at"] = now
    with transaction.atomic():
        updated = Preview.objects.filter(pk=preview_id, generation=generation).update(**fields)
        if updated:
            preview = Preview.objects.get(pk=preview_id)
            _event(preview, Actor.system(), action, message, **details)
            github_sync_enqueue(preview_id)
    return bool(updated)


def preview_note(*, preview_id: int, action: EventAction, message: str, **details) -> None:
    """An event without a status change (a step done, a warning)."""
    preview = Preview.objects.filter(pk=preview_id).first()
    if preview is not None:
        _event(preview, Actor.system(), action, message, **details)


# --- the reaper's changes ---------------------------------------------------------------------


REAPER = Actor(ActorKind.REAPER, "reaper")


def preview_reap(*, preview_id: int, generation: int | None, expires_at, reason: str, detail: str = "") -> bool:
    """Destroy a preview the reaper planned to delete, unless it changed since the plan (extended, redeployed).

    The check and the destroy are one transaction under the row lock, so an extend (or a redeploy, a pin)
    either lands before it, and the reaper skips the preview, or after it, and is refused as "being deleted":
    never lost in between. Returns True when the destroy was requested.
    """
    with transaction.atomic():
        preview = Preview.objects.select_for_update().filter(pk=preview_id).first()
        if preview is None or preview.generation != generation or preview.expires_at != expires_at:
            return False
        if preview.desired == Preview.Desired.DOWN:
            # Already asked for; a teardown that failed earlier is simply tried again.
            _event(preview, REAPER, EventAction.REAPED, f"{reason}: deleting again", reason=reason)
            _enqueue(TEARDOWN_TASK, preview)
            return True
        if preview.pinned:
            return False  # pinned since the plan (a pin changes neither generation nor expiry)
        _destroy_locked(preview, REAPER, f"Reaper: {reason}" + (f" ({detail})" if detail else ""))
    return True


REAP_CHUNK = 200  # previews reaped per transaction (their row locks are held until it commits)


@dataclass(frozen=True)
class Reaped:
    """A preview the reaper's bulk destroy brought down."""

    preview_id: int
    generation: int  # the new one, of the destroy
    namespace: str
    direct: bool  # the caller issues its namespace delete itself; False: a teardown task was queued


def previews_reap(*, decisions) -> tuple[list[Reaped], list[int]]:
    """`preview_reap` for many previews at once (the reaper's deletions): ([reaped], [skipped preview ids]).

    Each preview is checked under its row lock against the plan (same generation and expiry, not pinned since)
    and destroyed in the same transaction, as `preview_reap` does, with its "destroy requested" event; its PR is
    told in batched sync tasks. Previews are handled REAP_CHUNK at a time, one transaction each, rows locked
    in id order. A preview with data on the shared server, or already being deleted, gets the teardown task
    (which drops its data first, or tries again); every other one is returned `direct`: the caller issues
    the namespace delete (`provisioning.teardown_many`) instead of a task per preview.
    """
    wanted = [d for d in decisions if d.preview_id is not None]
    reaped: list[Reaped] = []
    skipped: list[int] = []
    for start in range(0, len(wanted), REAP_CHUNK):
        chunk = wanted[start:start + REAP_CHUNK]
        with transaction.atomic():
            done, passed = _reap_chunk(chunk)
        reaped += done
        skipped += passed
    return reaped, skipped


def _reap_chunk(chunk) -> tuple[list[Reaped], list[int]]:
    now = timezone.now()
    rows = {p.pk: p for p in Preview.objects.select_for_update().filter(pk__in=[d.preview_id for d in chunk])
            .order_by("pk")}
    changed: list[Preview] = []
    events: list[PreviewEvent] = []
    reaped: list[Reaped] = []
    skipped: list[int] = []
    slots: set[int] = set()
    for decision in chunk:
        preview = rows.get(decision.preview_id)
        if preview is None or preview.generation != decision.generation or preview.expires_at != decision.expires_at:
            skipped.append(decision.preview_id)
            continue
        if preview.desired == Preview.Desired.DOWN:
            # Already asked for; a teardown that failed earlier is simply tried again, by its task.
            events.append(_event_row(preview, REAPER, "reaped", f"{decision.reason}: deleting again",
                                     reason=decision.reason))
            _enqueue(TEARDOWN_TASK, preview)
            reaped.append(Reaped(preview.pk, preview.generation, preview.namespace, direct=False))
            continue
        if preview.pinned:
            skipped.append(preview.pk)  # pinned since the plan (a pin changes neither generation nor expiry)
            continue
        if preview.deploy_queued_at is not None:
            slots.add(preview.repository_id)  # its queued deploy is now stale: the slot goes to the next one
        reason = f"Reaper: {decision.reason}" + (f" ({decision.detail})" if decision.detail else "")
        preview.desired, preview.status, preview.status_message = Preview.Desired.DOWN, Preview.Status.DELETING, reason
        preview.generation += 1
        preview.deploy_queued_at = preview.next_attempt_at = None
        preview.updated_at = now
        changed.append(preview)
        events.append(_event_row(preview, REAPER, "destroy requested", reason))
        direct = not preview.data_name
        if not direct:
            _enqueue(TEARDOWN_TASK, preview)
        reaped.append(Reaped(preview.pk, preview.generation, preview.namespace, direct=direct))
    Preview.objects.bulk_update(changed, ["desired", "status", "status_message", "generation", "deploy_queued_at",
                                          "next_attempt_at", "updated_at"])
    PreviewEvent.objects.bulk_create(events)
    github_sync_enqueue_many([p.pk for p in changed])
    for repository_id in sorted(slots):
        transaction.on_commit(lambda repository_id=repository_id: deploy_slots_fill(repository_id))
    return reaped, skipped


def _event_row(preview: Preview, actor: Actor, action: str, message: str = "", **details) -> PreviewEvent:
    """An unsaved event, for bulk_create (what `_event` saves one at a time)."""
    return PreviewEvent(preview=preview, actor_kind=actor.kind, actor=actor.name[:150], action=action,
                        message=message, details=details, generation=preview.generation)


@dataclass(frozen=True)
class TeardownIssued:
    """What became of one namespace delete that `provisioning.teardown_many` issued for a reaped preview."""

    preview_id: int
    generation: int
    namespace: str
    outcome: str  # "terminating", "gone", "failed", "not ours" or "busy" (a deploy or teardown holds it)
    message: str = ""


def previews_teardown_issued(*, issued: list[TeardownIssued]) -> dict[str, int]:
    """Record the deletes issued for reaped previews, as the teardown task records its one; counts by outcome.

    Terminating: a "namespace terminating" event each (in one statement); the watcher marks them deleted.
    Gone or not ours: deleted now. Failed: "delete failed" with the reason, and the sweep tries again. Busy
    (another task of that preview held its lock): its teardown task is queued, which waits for the lock.
    Each only for the generation that issued it.
    """
    counts: dict[str, int] = {}
    terminating = [i for i in issued if i.outcome == "terminating"]
    if terminating:
        current = set(Preview.objects.filter(pk__in=[i.preview_id for i in terminating], desired=Preview.Desired.DOWN)
                      .values_list("pk", "generation"))
        PreviewEvent.objects.bulk_create([
            PreviewEvent(preview_id=i.preview_id, actor_kind=REAPER.kind, actor=REAPER.name, generation=i.generation,
                         action="namespace terminating", message=f"Namespace {i.namespace} is terminating")
            for i in terminating if (i.preview_id, i.generation) in current])
    for item in issued:
        counts[item.outcome] = counts.get(item.outcome, 0) + 1
        if item.outcome == "gone":
            preview_set_status(preview_id=item.preview_id, generation=item.generation, status=Preview.Status.DELETED,
                               message=f"Namespace {item.namespace} deleted", action="deleted")
        elif item.outcome == "not ours":
            preview_set_status(preview_id=item.preview_id, generation=item.generation, status=Preview.Status.DELETED,
                               message=f"Nothing deleted: {item.message}", action="deleted")
        elif item.outcome == "failed":
            preview_set_status(preview_id=item.preview_id, generation=item.generation,
                               status=Preview.Status.DELETING, message=f"Deleting failed, the sweep tries again: "
                               f"{item.message}"[:2000], action="delete failed")
        elif item.outcome == "busy":
            preview_teardown_retry(preview_id=item.preview_id)
    return counts


def preview_mark_gone(*, preview_id: int, generation: int | None, reason: str) -> bool:
    """The namespace is gone from the cluster: record the preview as deleted."""
    with transaction.atomic():
        preview = Preview.objects.select_for_update().filter(pk=preview_id).first()
        if preview is None or preview.generation != generation or preview.status == Preview.Status.DELETED:
            return False
        now = timezone.now()
        Preview.objects.filter(pk=preview_id).update(status=Preview.Status.DELETED, status_message=reason,
                                                     deleted_at=now, updated_at=now,
                                                     observed_generation=preview.generation)
        _event(preview, REAPER, EventAction.MARKED_DELETED, reason)
        github_sync_enqueue(preview_id)
    return True


def preview_warn_expiry(*, preview_id: int, expires_at) -> bool:
    """Announce, once per expiry time, on the PR that the preview will expire soon."""
    updated = Preview.objects.filter(pk=preview_id, expires_at=expires_at).exclude(
        expiry_warned_for=expires_at).update(expiry_warned_for=expires_at)
    if updated:
        preview = Preview.objects.get(pk=preview_id)
        _event(preview, REAPER, EventAction.EXPIRY_WARNING, f"Expires at {expires_at:%Y-%m-%d %H:%M} UTC")
        github_sync_enqueue(preview_id, expiry_warning=True)
    return bool(updated)


def preview_note_stuck(*, preview_id: int, detail: str) -> None:
    preview = Preview.objects.filter(pk=preview_id).first()
    if preview is not None:
        _event(preview, REAPER, EventAction.NAMESPACE_STUCK, detail)


# --- the engine's progress: deploy tasks, the cluster watcher, the sweep ------------------------


def preview_deploy_started(*, preview_id: int, generation: int) -> bool:
    """A deploy task starts on this generation: it gives back its queue slot and says so."""
    now = timezone.now()
    with transaction.atomic():
        updated = Preview.objects.filter(pk=preview_id, generation=generation, desired=Preview.Desired.UP).update(
            status=Preview.Status.DEPLOYING, status_message="Rendering and applying the manifests",
            deploy_queued_at=None, next_attempt_at=None, deploy_started_at=now, updated_at=now)
        if updated:
            _event_of(preview_id, generation, Actor.system(), EventAction.DEPLOY_STARTED)
            github_sync_enqueue(preview_id)
    return bool(updated)


def preview_data_prepared(*, preview_id: int, generation: int, database: str, reset: bool,
                          steps: list[str], size_bytes: int | None = None) -> bool:
    """A deploy ensured (or reset) the preview's data; a reset is the timeline's "data reset" event."""
    now = timezone.now()
    fields: dict = {"updated_at": now, "data_size_bytes": size_bytes, "data_size_at": now}
    if reset:
        fields["data_reset_at"] = now
    with transaction.atomic():
        updated = Preview.objects.filter(pk=preview_id, generation=generation).update(**fields)
        if updated and (reset or steps):
            action = EventAction.DATA_RESET if reset else EventAction.DATA_CREATED
            _event_of(preview_id, generation, Actor.system(), action,
                   f"{database}: {', '.join(steps)}" if steps else database, database=database, steps=steps)
            if reset:
                github_sync_enqueue(preview_id)
    return bool(updated)


def preview_data_measured(*, sizes: dict[int, int | None]) -> None:
    """Record the sizes the data reaper measured (preview id -> bytes)."""
    now = timezone.now()
    for preview_id, size in sizes.items():
        Preview.objects.filter(pk=preview_id).update(data_size_bytes=size, data_size_at=now)


def preview_deploy_applied(*, preview_id: int, generation: int, rollout: dict[str, int], objects: list[str]) -> bool:
    """Everything is applied; from here the cluster watcher decides when the rollout is done."""
    now = timezone.now()
    message = (f"Rolling out {', '.join(sorted(rollout))}" if rollout else "Applied; nothing to roll out")
    with transaction.atomic():
        updated = Preview.objects.filter(pk=preview_id, generation=generation, desired=Preview.Desired.UP,
                                         status=Preview.Status.DEPLOYING).update(
            applied_generation=generation, applied_at=now, rollout=rollout, status_message=message, updated_at=now)
        if updated:
            _event_of(preview_id, generation, Actor.system(), EventAction.APPLIED,
                   f"Applied {len(objects)} objects; the watcher follows the rollout", objects=objects)
    return bool(updated)


def preview_deploy_wait(*, preview_id: int, generation: int, message: str, retry_in: float) -> bool:
    """The deploy cannot go on yet (the API is unreachable, the old namespace is still terminating).

    The preview waits without a slot; it is queued again after `retry_in` seconds by the next slot
    fill or sweep, or sooner when the watcher sees what it was waiting for.
    """
    now = timezone.now()
    with transaction.atomic():
        updated = Preview.objects.filter(pk=preview_id, generation=generation, desired=Preview.Desired.UP).update(
            status=Preview.Status.PENDING, status_message=message, deploy_queued_at=None,
            next_attempt_at=now + timedelta(seconds=retry_in), updated_at=now)
        if updated:
            _event_of(preview_id, generation, Actor.system(), EventAction.DEPLOY_WAITING, message)
    return bool(updated)


def preview_rollout_finished(*, preview_id: int, generation: int, ready: bool, message: str = "",
                             **details) -> bool:
    """The watcher (or the sweep) saw the applied generation become ready, or fail for good.

    Only the generation that is current *and* applied is ever marked: a superseded or
    half-applied generation never becomes ready.
    """
    now = timezone.now()
    with transaction.atomic():
        preview = (Preview.objects.select_for_update().filter(
            pk=preview_id, generation=generation, applied_generation=generation, desired=Preview.Desired.UP,
            status=Preview.Status.DEPLOYING).first())
        if preview is None:
            return False
        took = round((now - preview.deploy_started_at).total_seconds(), 3) if preview.deploy_started_at else None
        if ready:
            preview.status, preview.status_message = Preview.Status.READY, f"Ready at {preview.url}"
            preview.ready_at, action = now, EventAction.READY
        else:
            preview.status, preview.status_message, action = Preview.Status.FAILED, message, EventAction.DEPLOY_FAILED
        preview.observed_generation = generation
        preview.save(update_fields=["status", "status_message", "ready_at", "observed_generation", "updated_at"])
        _event(preview, Actor.system(), action, preview.status_message, duration_seconds=took,
               **({"url": preview.url} if ready else {}), **details)
        github_sync_enqueue(preview_id)
    return True


def preview_namespace_gone(*, namespace: str) -> str:
    """The watcher (or the sweep) saw a managed namespace disappear. Returns what it meant.

    A preview being deleted is now deleted; a preview whose deploy waited for its old namespace to
    finish terminating is queued again at once.
    """
    now = timezone.now()
    with transaction.atomic():
        preview = Preview.objects.select_for_update().filter(namespace=namespace).first()
        if preview is None:
            return "unknown"
        if preview.desired == Preview.Desired.DOWN:
            if preview.status == Preview.Status.DELETED:
                return "already deleted"
            requested = (preview.events.filter(action=EventAction.DESTROY_REQUESTED, generation=preview.generation)
                         .values_list("created_at", flat=True).first())
            Preview.objects.filter(pk=preview.pk).update(
                status=Preview.Status.DELETED, status_message=f"Namespace {namespace} deleted", deleted_at=now,
                observed_generation=preview.generation, updated_at=now)
            preview.refresh_from_db()
            _event(preview, Actor.system(), EventAction.DELETED, preview.status_message,
                   duration_seconds=round((now - requested).total_seconds(), 3) if requested else None)
            github_sync_enqueue(preview.pk)
            return "deleted"
        if preview.status == Preview.Status.PENDING and preview.deploy_queued_at is None:
            Preview.objects.filter(pk=preview.pk).update(next_attempt_at=None)
            repository_id = preview.repository_id
            transaction.on_commit(lambda: deploy_slots_fill(repository_id))
            return "deploy resumed"
    return "ignored"


def preview_deploys_requeue_lost(*, older_than: timedelta) -> int:
    """Deploy tasks that were queued or started long ago and never got on (a worker died): queue them again."""
    before = timezone.now() - older_than
    message = "The deploy task was lost (a worker stopped?); it is queued again"
    with transaction.atomic():
        lost = list(Preview.objects.select_for_update(skip_locked=True).filter(desired=Preview.Desired.UP).filter(
            Q(status=Preview.Status.PENDING, deploy_queued_at__lt=before)
            | Q(status=Preview.Status.DEPLOYING, applied_generation__lt=F("generation"), deploy_started_at__lt=before)))
        for preview in lost:
            Preview.objects.filter(pk=preview.pk).update(status=Preview.Status.PENDING, status_message=message,
                                                         deploy_queued_at=None, next_attempt_at=None)
            _event(preview, Actor.system(), EventAction.DEPLOY_REQUEUED, message)
    return len(lost)


def task_results_prune(*, keep: int) -> int:
    """Delete the successful django-q task results beyond the newest `keep`; failures stay.

    django-q2's own pruning is off (save_limit 0, see config/settings.py): it locks and loads every kept
    result each time a task finishes. This is one DELETE, run by the sweep.
    """
    newest = Task.objects.filter(success=True).order_by("-stopped", "-pk").values("pk")[:keep]
    deleted, _ = Task.objects.filter(success=True).exclude(pk__in=newest).delete()
    return deleted


def preview_teardown_retry(*, preview_id: int) -> bool:
    """Queue the teardown again for a preview whose namespace is still there and not terminating."""
    with transaction.atomic():
        preview = Preview.objects.select_for_update().filter(
            pk=preview_id, desired=Preview.Desired.DOWN, status=Preview.Status.DELETING).first()
        if preview is None:
            return False
        _enqueue(TEARDOWN_TASK, preview)
    return True
