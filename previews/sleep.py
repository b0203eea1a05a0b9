"""Sleep: idle previews are scaled to zero and woken on demand.

- `due` (pure) says whether a preview has been idle long enough: no deploy, wake, extension or
  PR command for the repository's `sleep_after_hours` (0: never), measured from the later of its
  last activity and its last time becoming ready. Pinned previews never sleep by themselves.
- `sleep_idle` is the `sleep` schedule: it asks the services to put due previews to sleep, and
  queues the sleep task again for one whose scaling did not finish.
- `sleep` is the task: under the preview's deploy lock, for its generation only, it scales every
  Deployment and StatefulSet to zero (`kube.sleep_workloads`, replicas remembered in an annotation),
  deletes its routes, so the route controller sends the preview's host to its fallback (this service's
  "asleep" page, `previews/visits.py`), and records the preview as asleep.

Waking is a deploy (`services.preview_wake`, a push, a redeploy, a visitor's click on the asleep page):
the deploy task re-applies the manifests (the routes among them), restores the remembered replicas
(`kube.wake_workloads`) and records the rollout, and the cluster watcher marks it ready, like any other
deploy.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.db.models import Q
from django.utils import timezone

from previews import locks, manifests, services
from previews.gateways import errors, kube
from previews.models import ActorKind, EventAction, Preview, Repository

logger = logging.getLogger(__name__)

SLEEP_RETRY_AFTER = timedelta(minutes=5)
# What a sleeping preview loses besides its replicas, so its host falls to the controller's fallback.
ROUTE_KINDS = {kind: manifests.ALLOWED_KINDS[kind] for kind in ("Ingress", *manifests.ROUTE_KINDS)}
IDLE = services.Actor(ActorKind.SYSTEM, "idle")


def due(*, now: datetime, sleep_after_hours: int, status: str, desired: str, pinned: bool,
        last_activity_at: datetime | None, ready_at: datetime | None, created_at: datetime) -> bool:
    if sleep_after_hours <= 0 or pinned or desired != Preview.Desired.UP:
        return False
    if status not in (Preview.Status.READY, Preview.Status.FAILED):
        return False
    last = max(t for t in (last_activity_at, ready_at, created_at) if t is not None)
    return now - last >= timedelta(hours=sleep_after_hours)


def sleep_idle(now: datetime | None = None) -> dict[str, int]:
    """The scheduled pass: put idle previews to sleep; retry sleeps that did not finish."""
    now = now or timezone.now()
    done = {"slept": 0, "retried": 0}
    for repository in Repository.objects.filter(sleep_after_hours__gt=0):
        cutoff = now - timedelta(hours=repository.sleep_after_hours)
        candidates = Preview.objects.filter(
            repository=repository, desired=Preview.Desired.UP, pinned=False,
            status__in=[Preview.Status.READY, Preview.Status.FAILED], created_at__lt=cutoff,
        ).filter(Q(last_activity_at__isnull=True) | Q(last_activity_at__lt=cutoff)).filter(
            Q(ready_at__isnull=True) | Q(ready_at__lt=cutoff))
        for preview in candidates:
            if not due(now=now, sleep_after_hours=repository.sleep_after_hours, status=preview.status,
                       desired=preview.desired, pinned=preview.pinned, last_activity_at=preview.last_activity_at,
                       ready_at=preview.ready_at, created_at=preview.created_at):
                continue
            try:
                services.preview_sleep(preview=preview, actor=IDLE,
                                       reason=f"Idle for {repository.sleep_after_hours} h")
            except services.PreviewConflict:
                continue  # it changed since the query (a push, a close): not idle any more
            done["slept"] += 1
    unfinished = Preview.objects.filter(status=Preview.Status.SLEEPING, desired=Preview.Desired.UP,
                                        slept_at__isnull=True, updated_at__lt=now - SLEEP_RETRY_AFTER)
    for preview in unfinished:
        services.preview_sleep_retry(preview_id=preview.pk)
        done["retried"] += 1
    if any(done.values()):
        logger.info("sleep: %s", done)
    return done


def sleep(preview_id: int, generation: int) -> str:
    """Scale the preview's namespace to zero for this generation; a stale task does nothing."""
    with locks.advisory_lock(locks.DEPLOY, preview_id):
        preview = Preview.objects.filter(pk=preview_id).first()
        if (preview is None or preview.generation != generation or preview.desired != Preview.Desired.UP
                or preview.status != Preview.Status.SLEEPING):
            logger.info("sleep of preview %s generation %s is stale; nothing to do", preview_id, generation)
            return "stale"
        if preview.slept_at is not None:
            return "already asleep"
        try:
            remembered = kube.sleep_workloads(preview.namespace)
            kube.prune(preview.namespace, kube.MANAGED_SELECTOR, keep=set(), kinds=ROUTE_KINDS)
        except errors.GatewayError as exc:
            services.preview_set_status(
                preview_id=preview_id, generation=generation, status=Preview.Status.SLEEPING,
                message=f"Scaling to zero failed; it is tried again in a few minutes: {exc}"[:2000],
                action=EventAction.SLEEP_FAILED)
            return "failed"
        return "slept" if services.preview_slept(preview_id=preview_id, generation=generation,
                                                 workloads=remembered) else "stale"
