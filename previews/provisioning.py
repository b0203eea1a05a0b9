"""Reconciling the cluster toward a preview's desired state (deploy and teardown).

Called by the django-q2 tasks. Each run does bounded work and returns: a deploy
renders, validates, applies and prunes, then records which workloads at which
generation the rollout must reach; a teardown issues the namespace delete. The
cluster watcher (`previews/engine/watcher.py`) learns from Kubernetes watches
when a rollout is ready or failing and when a namespace is gone; workers never
wait on pods or on the namespace controller.

Each run works for one `generation` and checks between steps that it is still
the current one, so a newer request (a push, a close) takes over cleanly. Runs
for one preview are serialised by a Postgres advisory lock, so a teardown never
races a deploy that could recreate the namespace. Every step is idempotent: a
run killed halfway and run again converges.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings

from previews import data as preview_data
from previews import locks, manifests, policy, services
from previews.gateways import errors, kube, preview_db
from previews.models import EventAction, Preview

logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class DeployPlan:
    """Everything a deploy applies, rendered and validated before the cluster is touched."""

    namespace_labels: dict[str, str]
    namespace_annotations: dict[str, str]
    guardrails: list[dict]
    objects: list[dict]
    object_selector: str


def preview_labels(preview: Preview) -> dict[str, str]:
    return {
        manifests.MANAGED_BY_LABEL: manifests.MANAGED_BY_VALUE,
        manifests.REPOSITORY_LABEL: str(preview.repository_id),
        manifests.PR_LABEL: str(preview.pr_number),
    }


def render_context(preview: Preview) -> manifests.RenderContext:
    """What the request-time check judged the bundle by (`policy.request_context`), with the preview's own
    labels, images and commit."""
    return dataclasses.replace(policy.request_context(preview.repository, preview.namespace),
                               labels=preview_labels(preview), images=dict(preview.images),
                               head_sha=preview.head_sha)


def plan_deploy(preview: Preview) -> DeployPlan:
    """Render and validate everything; raises ManifestError before anything is applied."""
    ctx = render_context(preview)
    source = preview.manifests or preview.repository.manifest_template
    if not source.strip():
        raise manifests.ManifestError([manifests.Problem(
            0, "", f"nothing to deploy: {preview.repository} has no manifest template and the request sent none")])
    objects = manifests.render_bundle(source, ctx, settings.PREVIEWS_MAX_MANIFEST_BYTES)
    repository = preview.repository
    guardrails = manifests.guardrail_objects(ctx, dataclasses.replace(
        policy.guardrails(repository), data_egress=preview_data.egress(repository.data_mode)))
    labels = {
        **ctx.labels,
        # Pod Security Admission: the repository's level (baseline by default, or restricted) is enforced even
        # if something slipped past our own checks; restricted is warned about and audited.
        **manifests.namespace_security_labels(repository.pod_security),
    }
    annotations = {
        "previews.dev/repository": repository.full_name,
        "previews.dev/head-sha": preview.head_sha,
        "previews.dev/url": preview.url,
        "previews.dev/expires-at": preview.expires_at.isoformat(),
    }
    selector = ",".join(f"{k}={v}" for k, v in ctx.labels.items())
    return DeployPlan(labels, annotations, guardrails, objects, selector)


def _current(preview_id: int, generation: int, desired: str) -> bool:
    return Preview.objects.filter(pk=preview_id, generation=generation, desired=desired).exists()


def _bounded(text: str, limit: int = 2000) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def deploy(preview_id: int, generation: int) -> str:
    """Render, validate and apply the preview's objects, record what the rollout must reach, and return.

    Bounded work: the rollout itself is followed by the cluster watcher. Returns an outcome word.
    """
    started = time.monotonic()
    with locks.advisory_lock(locks.DEPLOY, preview_id):
        preview = Preview.objects.select_related("repository").filter(pk=preview_id).first()
        if preview is None or preview.generation != generation or preview.desired != Preview.Desired.UP:
            logger.info("deploy of preview %s generation %s is stale; nothing to do", preview_id, generation)
            return "stale"
        if not services.preview_deploy_started(preview_id=preview_id, generation=generation):
            return "stale"
        try:
            return _deploy(preview, generation, started)
        # The data server's errors first: they are gateway errors too, with their own messages.
        except preview_db.DataUnavailable as exc:
            return _retry_later(preview_id, generation, "The preview data server", exc)
        except preview_db.DataError as exc:
            _failed(preview_id, generation, _bounded(f"The preview's data could not be prepared: {exc}"), started)
            return "failed"
        except errors.Unavailable as exc:
            # A transient outage never fails a preview by itself: wait, and try again.
            return _retry_later(preview_id, generation, "The Kubernetes API", exc)
        except errors.GatewayError as exc:
            _failed(preview_id, generation, _bounded(str(exc)), started)
            return "failed"
        except Exception as exc:
            if locks.session_lost(exc):
                # The database went away (a restart, a failover): nothing can be recorded, and it is not the
                # preview's failure. The deploy lock went with the session, so the recovery pass sees the run
                # lost and hands it out again once the database is back.
                raise
            # Whatever went wrong, the generation ends failed with a message, never "deploying" forever.
            logger.exception("deploy of preview %s generation %s crashed", preview_id, generation)
            _failed(preview_id, generation, _bounded(f"The deploy failed unexpectedly ({exc.__class__.__name__}: "
                                                     f"{exc}); details are in the worker's log"), started)
            return "failed"
        finally:
            services.deploy_slots_fill(preview.repository_id)


def _retry_later(preview_id: int, generation: int, what: str, exc: Exception) -> str:
    services.preview_deploy_wait(
        preview_id=preview_id, generation=generation, retry_in=settings.PREVIEWS_DEPLOY_RETRY_SECONDS,
        message=_bounded(f"{what} is unreachable; the deploy is tried again in "
                         f"{settings.PREVIEWS_DEPLOY_RETRY_SECONDS}s ({exc})"))
    return "retry"


def _failed(preview_id: int, generation: int, message: str, started: float, **details) -> None:
    services.preview_set_status(preview_id=preview_id, generation=generation, status=Preview.Status.FAILED,
                                message=message, action=EventAction.DEPLOY_FAILED,
                                duration_seconds=round(time.monotonic() - started, 3), **details)


def _deploy(preview: Preview, generation: int, started: float) -> str:
    preview_id, namespace = preview.pk, preview.namespace
    try:
        plan = plan_deploy(preview)
    except manifests.ManifestError as exc:
        _failed(preview_id, generation, _bounded(f"The manifests were refused, nothing was applied: {exc}"),
                started, problems=[str(p) for p in exc.problems[:50]])
        return "failed"

    # A preview never applied has, as a rule, no namespace yet: it is created in one request (below) instead
    # of read and then applied. Should it exist after all, it is read and checked like any other.
    first = preview.applied_generation == 0
    info = None if first else kube.read_namespace(namespace)
    if _terminating(info):
        return _wait_for_old_namespace(preview_id, generation, namespace)
    data_objects = _prepare_data(preview, generation, plan)
    # The generation was current when this run started, a few milliseconds ago; preparing data can take
    # longer, so then it is checked once more before the cluster is touched. From here on the run takes
    # milliseconds: a newer request waits for this run's lock, and only a current generation is marked applied.
    if data_objects is not None and not _current(preview_id, generation, Preview.Desired.UP):
        return "superseded"
    created = first and kube.create_namespace(namespace, plan.namespace_labels, plan.namespace_annotations)
    if not created:
        if first:  # it existed after all: read and checked as for a redeploy
            info = kube.read_namespace(namespace)
            if _terminating(info):
                return _wait_for_old_namespace(preview_id, generation, namespace)
        kube.ensure_namespace(namespace, plan.namespace_labels, plan.namespace_annotations, existing=info)
    if settings.PREVIEWS_NAMESPACE_CLUSTERROLE:
        kube.ensure_access(namespace, settings.PREVIEWS_NAMESPACE_CLUSTERROLE,
                           settings.PREVIEWS_SERVICE_ACCOUNT, render_context(preview).labels)
    kube.apply_objects(plan.guardrails)
    objects = plan.objects + (data_objects or []) + _tls_copy(preview)
    # With gateway routing (and PREVIEWS_GATEWAY_WAIT_FOR_STATUS) the routes are part of the rollout: ready
    # once the Gateway's controller has accepted them at the generation applied here.
    tracked = kube.WORKLOAD_KINDS + (manifests.ROUTE_KINDS if policy.waits_for_route_status(preview.repository)
                                     else ())
    rollout = kube.apply_objects(objects, track=tracked)
    # A namespace created just now holds nothing of an earlier deploy to prune.
    pruned = [] if info is None else kube.prune(namespace, plan.object_selector, manifests.object_keys(objects),
                                                manifests.ALLOWED_KINDS)
    if pruned:
        services.preview_note(preview_id=preview_id, action=EventAction.PRUNED,
                              message="Removed objects no longer in the manifests: " + ", ".join(pruned),
                              objects=pruned)
    # Workloads put to sleep get their remembered replicas back (a wake is a deploy); the rollout waits for them.
    woken = {} if info is None else kube.wake_workloads(namespace)
    if woken:
        rollout = {**rollout, **woken}
        services.preview_note(preview_id=preview_id, action=EventAction.WOKEN, message="Restored the replicas of "
                              + ", ".join(sorted(woken)), workloads=sorted(woken))
    applied = services.preview_deploy_applied(
        preview_id=preview_id, generation=generation, rollout=rollout,
        objects=[f"{o['kind']}/{o['metadata']['name']}" for o in objects])
    return "applied" if applied else "superseded"


def _tls_copy(preview: Preview) -> list[dict]:
    """The repository's TLS Secret for the preview's namespace, read again from its source on every deploy (so a
    renewed certificate reaches every preview at its next deploy); nothing when none is copied."""
    ctx = render_context(preview)
    if not ctx.tls_secret_source:
        return []
    try:
        data = kube.read_tls_secret(ctx.tls_secret_source, ctx.tls_secret_name)
    except errors.NotFound as exc:
        raise errors.GatewayError(f"the repository's TLS Secret {ctx.tls_secret_source}/{ctx.tls_secret_name} does "
                                  "not exist; create it there, or clear the repository's TLS secret name") from exc
    return [manifests.tls_secret_copy(ctx, data)]


def _terminating(info: kube.NamespaceInfo | None) -> bool:
    return info is not None and info.phase == "Terminating" and info.managed


def _wait_for_old_namespace(preview_id: int, generation: int, namespace: str) -> str:
    # A previous teardown is still finishing; the watcher queues this deploy again once it is gone.
    services.preview_deploy_wait(preview_id=preview_id, generation=generation, retry_in=60,
                                 message=f"Waiting for the previous namespace {namespace} to finish terminating")
    return "waiting"


def _prepare_data(preview: Preview, generation: int, plan: DeployPlan) -> list[dict] | None:
    """Ensure (or reset) the preview's data before anything is applied; the objects that go with it.

    None when the preview has no data to look after (nothing was done).
    """
    ctx = render_context(preview)
    prepared = preview_data.prepare(preview, ctx, generation)
    if prepared is None:
        return None
    theirs = {(o["kind"], o["metadata"]["name"]) for o in plan.objects}
    clash = sorted(f"{o['kind']}/{o['metadata']['name']}" for o in prepared.objects
                   if (o["kind"], o["metadata"]["name"]) in theirs)
    if clash:
        raise preview_data.DataConfigError(f"the manifests define {', '.join(clash)}, which the service renders "
                                           "for the preview's data itself")
    services.preview_data_prepared(preview_id=preview.pk, generation=generation, database=prepared.database,
                                   reset=prepared.reset, steps=prepared.steps, size_bytes=prepared.size_bytes)
    return prepared.objects


def _drop_data(preview: Preview) -> None:
    """The preview's data on the shared server goes with it (bounded by PREVIEWS_DATA_TIMEOUT per statement).

    A failure never holds up the namespace's deletion: it is an event, and the data reaper drops
    what is left once the preview is deleted.
    """
    if not preview.data_name:
        return
    name = preview.data_name
    try:
        steps = preview_data.drop(preview)
    except preview_db.DataError as exc:
        services.preview_note(preview_id=preview.pk, action=EventAction.DATA_DROP_FAILED,
                              message=_bounded(f"Dropping {name} failed; the data reaper tries again: {exc}"))
        return
    services.preview_note(preview_id=preview.pk, action=EventAction.DATA_DROPPED,
                          message=f"{name}: {', '.join(steps) or 'nothing left to drop'}", steps=steps)


# The teardown task's result word for each outcome of its one delete.
TEARDOWN_RESULTS = {
    services.TeardownOutcome.GONE: "deleted", services.TeardownOutcome.NOT_OURS: "deleted",
    services.TeardownOutcome.FAILED: "failed", services.TeardownOutcome.TERMINATING: "terminating",
}


def teardown(preview_id: int, generation: int) -> str:
    """Issue the (UID-preconditioned) delete of the preview's namespace and return; never force-finalizes.

    The cluster watcher marks the preview deleted when the namespace is gone.
    """
    started = time.monotonic()
    with locks.advisory_lock(locks.DEPLOY, preview_id):
        preview = Preview.objects.filter(pk=preview_id).first()
        if preview is None or preview.generation != generation or preview.desired != Preview.Desired.DOWN:
            logger.info("teardown of preview %s generation %s is stale; nothing to do", preview_id, generation)
            return "stale"
        _drop_data(preview)
        try:
            result: kube.DeleteOutcome | errors.GatewayError = kube.delete_namespace(preview.namespace)
        except errors.GatewayError as exc:
            result = exc
        issued = _issued(preview_id, generation, preview.namespace, result,
                         duration_seconds=round(time.monotonic() - started, 3))
        services.previews_teardown_issued(issued=[issued], actor=services.Actor.system())
        return TEARDOWN_RESULTS[issued.outcome]


def _issued(preview_id: int, generation: int, namespace: str, result: kube.DeleteOutcome | errors.GatewayError,
            duration_seconds: float | None = None) -> services.TeardownIssued:
    """What a delete's answer (or the error it met) means for the preview being torn down."""
    if isinstance(result, kube.NamespaceNotOurs):
        outcome, message = services.TeardownOutcome.NOT_OURS, str(result)
    elif isinstance(result, errors.GatewayError):
        outcome, message = services.TeardownOutcome.FAILED, str(result)
    elif result.gone:
        outcome, message = services.TeardownOutcome.GONE, ""
    else:
        outcome, message = services.TeardownOutcome.TERMINATING, ""
    return services.TeardownIssued(preview_id, generation, namespace, outcome, message, duration_seconds)


# --- many deletes at once (the reaper's) ---------------------------------------------------------

DELETE_CHUNK = 100  # previews whose locks are held at a time while their deletes are issued


@dataclass(frozen=True)
class ListedNamespace:
    """A namespace as the reaper's labelled list showed it (what its delete is preconditioned on)."""

    name: str
    uid: str
    resource_version: str


def delete_listed(namespaces: list[ListedNamespace], careful: Callable[[ListedNamespace], kube.DeleteOutcome],
                  ) -> list[kube.DeleteOutcome | errors.GatewayError]:
    """Delete each namespace exactly as listed (one preconditioned request, `kube.delete_listed_namespace`),
    kube.CONCURRENCY at a time; one that changed since it was listed goes the `careful` way instead (a read,
    the checks, a delete). The outcome of each, in order, or the GatewayError it met: one failure never stops
    the rest. Bounded: at most len(namespaces) requests (two or three for a changed one), each with a timeout.
    """
    def one(ns: ListedNamespace) -> kube.DeleteOutcome | errors.GatewayError:
        try:
            outcome = kube.delete_listed_namespace(ns.name, ns.uid, ns.resource_version)
            return careful(ns) if outcome.changed else outcome
        except errors.GatewayError as exc:
            return exc

    return kube.map_concurrently(one, namespaces)


def teardown_many(reaped: list[tuple[services.Reaped, ListedNamespace]]) -> list[services.TeardownIssued]:
    """`teardown` for many reaped previews at once: issue their namespace deletes and return; records each.

    As a teardown task does, each delete is issued while holding the preview's deploy lock, so it never races
    a deploy that could recreate the namespace: the locks of DELETE_CHUNK previews are taken at once (those
    taken by a running task are not waited for: that preview gets its teardown task, which waits). A namespace
    changed since the listing is deleted after reading it as the teardown task does (still ours? then delete).
    The watcher marks each preview deleted when its namespace is gone.
    """
    issued: list[services.TeardownIssued] = []

    def careful(ns: ListedNamespace) -> kube.DeleteOutcome:
        return kube.delete_namespace(ns.name)

    for start in range(0, len(reaped), DELETE_CHUNK):
        chunk = reaped[start:start + DELETE_CHUNK]
        locked = locks.try_advisory_locks(locks.DEPLOY, [r.preview_id for r, _ns in chunk])
        try:
            mine = [(r, ns) for r, ns in chunk if r.preview_id in locked]
            outcomes = delete_listed([ns for _r, ns in mine], careful)
        finally:
            locks.advisory_unlock_many(locks.DEPLOY, locked)
        issued += [services.TeardownIssued(r.preview_id, r.generation, r.namespace, services.TeardownOutcome.BUSY)
                   for r, _ns in chunk if r.preview_id not in locked]
        issued += [_issued(r.preview_id, r.generation, r.namespace, outcome)
                   for (r, _ns), outcome in zip(mine, outcomes, strict=True)]
    services.previews_teardown_issued(issued=issued, actor=services.REAPER)
    return issued
