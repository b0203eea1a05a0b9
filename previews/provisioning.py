"""Reconciling the cluster toward a preview's desired state (deploy and teardown).

Called by the django-q2 tasks. Each run works for one `generation` and checks
between steps that it is still the current one, so a newer request (a push, a
close) takes over cleanly. Runs for one preview are serialised by a Postgres
advisory lock, so a teardown never races a deploy that could recreate the
namespace. Every step is idempotent: a run killed halfway and run again
converges.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from django.conf import settings

from previews import kube, locks, manifests, services
from previews.models import Preview

logger = logging.getLogger(__name__)

NAMESPACE_GONE_WAIT = 120  # seconds a teardown waits for the namespace controller to finish


@dataclass(frozen=True)
class Plan:
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
    repository = preview.repository
    return manifests.RenderContext(
        namespace=preview.namespace,
        host=f"{preview.namespace}.{repository.base_domain}",
        labels=preview_labels(preview),
        images=dict(preview.images),
        service_name=repository.service_name,
        service_port=repository.service_port,
        tls_secret_name=repository.tls_secret_name,
        ingress_class=settings.PREVIEWS_INGRESS_CLASS,
    )


def plan_deploy(preview: Preview) -> Plan:
    """Render and validate everything; raises ManifestError before anything is applied."""
    ctx = render_context(preview)
    source = preview.manifests or preview.repository.manifest_template
    if not source.strip():
        raise manifests.ManifestError([manifests.Problem(
            0, "", f"nothing to deploy: {preview.repository} has no manifest template and the request sent none")])
    objects = manifests.render_bundle(source, ctx, settings.PREVIEWS_MAX_MANIFEST_BYTES)
    repository = preview.repository
    guardrails = manifests.guardrail_objects(ctx, manifests.Guardrails(
        quota_cpu=repository.quota_cpu, quota_memory=repository.quota_memory, quota_pods=repository.quota_pods,
        ingress_namespace=settings.PREVIEWS_INGRESS_NAMESPACE,
    ))
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
    return Plan(labels, annotations, guardrails, objects, selector)


def _current(preview_id: int, generation: int, desired: str) -> bool:
    return Preview.objects.filter(pk=preview_id, generation=generation, desired=desired).exists()


def deploy(preview_id: int, generation: int) -> str:
    """Bring the preview's namespace to the rendered state and wait for the rollout. Returns an outcome word."""
    started = time.monotonic()

    def took() -> float:
        return round(time.monotonic() - started, 3)

    with locks.advisory_lock(locks.DEPLOY, preview_id):
        preview = Preview.objects.select_related("repository").filter(pk=preview_id).first()
        if preview is None or preview.generation != generation or preview.desired != Preview.Desired.UP:
            logger.info("deploy of preview %s generation %s is stale; nothing to do", preview_id, generation)
            return "stale"

        def current() -> bool:
            return _current(preview_id, generation, Preview.Desired.UP)

        services.preview_set_status(preview_id=preview_id, generation=generation,
                                    status=Preview.Status.DEPLOYING, message="Rendering manifests",
                                    action="deploy started")
        try:
            plan = plan_deploy(preview)
        except manifests.ManifestError as exc:
            services.preview_set_status(
                preview_id=preview_id, generation=generation, status=Preview.Status.FAILED,
                message=f"The manifests were refused, nothing was applied: {exc}", action="deploy failed",
                problems=[str(p) for p in exc.problems], duration_seconds=took())
            return "failed"

        try:
            namespace = preview.namespace
            info = kube.read_namespace(namespace)
            if info is not None and info.phase == "Terminating" and info.managed:
                # A previous teardown is still finishing; the name is free once it is gone.
                kube.wait_namespace_gone(namespace, NAMESPACE_GONE_WAIT)
            if not current():
                return "superseded"
            kube.ensure_namespace(namespace, plan.namespace_labels, plan.namespace_annotations)
            if settings.PREVIEWS_NAMESPACE_CLUSTERROLE:
                kube.ensure_access(namespace, settings.PREVIEWS_NAMESPACE_CLUSTERROLE,
                                   settings.PREVIEWS_SERVICE_ACCOUNT, render_context(preview).labels)
            if not current():
                return "superseded"
            kube.apply_objects(plan.guardrails)
            if not current():
                return "superseded"
            kube.apply_objects(plan.objects)
            # A namespace created just now holds nothing of an earlier deploy to prune.
            pruned = [] if info is None else kube.prune(namespace, plan.object_selector,
                                                        manifests.object_keys(plan.objects))
            if pruned:
                services.preview_note(preview_id=preview_id, action="pruned",
                                      message="Removed objects no longer in the manifests: " + ", ".join(pruned),
                                      objects=pruned)
            if not current():
                return "superseded"
            services.preview_note(preview_id=preview_id, action="applied",
                                  message=f"Applied {len(plan.objects)} objects; waiting for the rollout",
                                  objects=[f"{o['kind']}/{o['metadata']['name']}" for o in plan.objects])
            outcome = kube.wait_for_rollout(namespace, settings.PREVIEWS_ROLLOUT_TIMEOUT, current)
        except kube.KubeError as exc:
            services.preview_set_status(preview_id=preview_id, generation=generation, status=Preview.Status.FAILED,
                                        message=str(exc), action="deploy failed", duration_seconds=took())
            return "failed"

        if outcome.stopped:
            return "superseded"
        if outcome.ready:
            services.preview_set_status(preview_id=preview_id, generation=generation, status=Preview.Status.READY,
                                        message=f"Ready at {preview.url}", action="ready", url=preview.url,
                                        duration_seconds=took())
            return "ready"
        services.preview_set_status(preview_id=preview_id, generation=generation, status=Preview.Status.FAILED,
                                    message=outcome.message, action="deploy failed", pending=outcome.pending,
                                    duration_seconds=took())
        return "failed"


def teardown(preview_id: int, generation: int) -> str:
    """Delete the preview's namespace and wait for it to be gone. Never force-finalizes."""
    started = time.monotonic()
    with locks.advisory_lock(locks.DEPLOY, preview_id):
        preview = Preview.objects.filter(pk=preview_id).first()
        if preview is None or preview.generation != generation or preview.desired != Preview.Desired.DOWN:
            logger.info("teardown of preview %s generation %s is stale; nothing to do", preview_id, generation)
            return "stale"
        try:
            outcome = kube.delete_namespace(preview.namespace)
            if not outcome.gone:
                services.preview_note(preview_id=preview_id, action="namespace terminating",
                                      message=f"Namespace {preview.namespace} is terminating")
                gone = kube.wait_namespace_gone(preview.namespace, NAMESPACE_GONE_WAIT)
            else:
                gone = True
        except kube.NamespaceNotOurs as exc:
            services.preview_set_status(preview_id=preview_id, generation=generation, status=Preview.Status.DELETED,
                                        message=f"Nothing deleted: {exc}", action="deleted")
            return "deleted"
        except kube.KubeError as exc:
            services.preview_set_status(preview_id=preview_id, generation=generation,
                                        status=Preview.Status.DELETING,
                                        message=f"Deleting failed, will be retried by the reaper: {exc}",
                                        action="delete failed")
            return "failed"
        if not gone:
            services.preview_set_status(
                preview_id=preview_id, generation=generation, status=Preview.Status.DELETING,
                message=f"Namespace {preview.namespace} is still terminating after {NAMESPACE_GONE_WAIT}s; "
                        "the reaper keeps watching it", action="delete slow")
            return "terminating"
        services.preview_set_status(preview_id=preview_id, generation=generation, status=Preview.Status.DELETED,
                                    message=f"Namespace {preview.namespace} deleted", action="deleted",
                                    duration_seconds=round(time.monotonic() - started, 3))
        return "deleted"
