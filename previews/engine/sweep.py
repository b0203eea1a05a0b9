"""The sweep: a scheduled pass that catches what the watcher missed (while it was down, or ever).

Bounded work, every minute: rollouts past their deadline are failed with the
reason; previews being deleted whose namespace is gone are marked deleted (one
labelled namespace list); deletes that did not take are issued again; deploy
tasks that were lost are queued again
and waiting deploys get free slots (also every few seconds by the watcher: `recover`); old task results are
pruned.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db.models import F, Q
from django.utils import timezone

from previews import services
from previews.gateways import errors, kube
from previews.models import Preview

logger = logging.getLogger(__name__)

# The watcher fails a rollout at its deadline; the sweep only steps in after this much more.
DEADLINE_SLACK = timedelta(seconds=30)
DELETE_RETRY_AFTER = timedelta(seconds=60)


def recover() -> dict[str, int]:
    """Lost deploys handed out again, and free slots given to waiting previews (oldest first); counts.

    A few queries when nothing is lost: the cluster watcher's leader runs it every few seconds
    (`watcher.RECOVER_SECONDS`), the sweep once a minute (for when no watcher runs).
    """
    lost = services.preview_deploys_recover_lost(grace=timedelta(seconds=settings.PREVIEWS_LOST_TASK_SECONDS))
    queued = 0
    now = timezone.now()
    waiting = (Preview.objects.filter(desired=Preview.Desired.UP, status=Preview.Status.PENDING, deploy_queued_at=None)
               .filter(Q(next_attempt_at=None) | Q(next_attempt_at__lte=now))
               .values_list("repository_id", flat=True).distinct())
    for repository_id in sorted(set(waiting)):
        queued += services.deploy_slots_fill(repository_id)
    return {"requeued": lost["running"] + lost["queued"], "queued": queued}


def sweep() -> dict[str, int]:
    """One pass; returns counts of what it did."""
    now = timezone.now()
    done = {"timed_out": 0, "deleted": 0, "delete_retried": 0, "requeued": 0, "queued": 0, "task_results_pruned": 0}
    overdue = Preview.objects.filter(
        status=Preview.Status.DEPLOYING, desired=Preview.Desired.UP, applied_generation=F("generation"),
        applied_at__lt=now - timedelta(seconds=settings.PREVIEWS_ROLLOUT_TIMEOUT) - DEADLINE_SLACK)
    for preview in overdue:
        try:
            reasons = kube.explain_rollout(preview.namespace)
        except errors.GatewayError as exc:
            logger.warning("sweep: cannot explain %s (%s); trying again next time", preview.namespace, exc)
            break  # unknown state: fail nothing on it
        message = f"not ready after {settings.PREVIEWS_ROLLOUT_TIMEOUT}s (found by the sweep)"
        if reasons:
            message += ": " + "; ".join(reasons)
        done["timed_out"] += services.preview_rollout_finished(
            preview_id=preview.pk, generation=preview.generation, ready=False, message=message[:2000])

    deleting = list(Preview.objects.filter(desired=Preview.Desired.DOWN, status=Preview.Status.DELETING))
    if deleting:
        try:
            present = {ns.name: ns for ns in kube.list_managed_namespaces()}
        except errors.GatewayError as exc:
            logger.warning("sweep: cannot list namespaces (%s); deletions are checked next time", exc)
            present = None
        for preview in deleting if present is not None else []:
            info = present.get(preview.namespace)
            if info is None:
                done["deleted"] += (services.preview_namespace_gone(namespace=preview.namespace)
                                    == services.NamespaceGone.DELETED)
            elif info.phase != "Terminating" and preview.updated_at < now - DELETE_RETRY_AFTER:
                done["delete_retried"] += services.preview_teardown_retry(preview_id=preview.pk)

    recovered = recover()
    done["requeued"], done["queued"] = recovered["requeued"], recovered["queued"]
    done["task_results_pruned"] = services.task_results_prune(keep=settings.PREVIEWS_TASK_RESULTS_KEPT)
    if any(done.values()):
        logger.info("sweep: %s", done)
    return done
