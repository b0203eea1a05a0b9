"""The workloads in our namespaces: why a rollout is not ready, sleep and wake, and what their pods request."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from kubernetes import client

from previews.cost import Workload
from previews.gateways import errors
from previews.gateways.kube.client import (
    LIST_PAGE_SIZE,
    MANAGED_SELECTOR,
    REQUEST_TIMEOUT,
    call,
    core_api,
    resource_for,
)


def explain_rollout(namespace: str, max_events: int = 5) -> list[str]:
    """Why pods are not ready: container waiting reasons, quota rejections, recent warnings."""
    reasons: list[str] = []
    core = core_api()
    pods = call("list pods", core.list_namespaced_pod, namespace, _request_timeout=REQUEST_TIMEOUT).items
    for pod in pods:
        statuses = (pod.status.init_container_statuses or []) + (pod.status.container_statuses or [])
        for cs in statuses:
            waiting = cs.state.waiting if cs.state else None
            if waiting and waiting.reason and waiting.reason not in ("ContainerCreating", "PodInitializing"):
                detail = f": {waiting.message}" if waiting.message else ""
                reasons.append(f"pod {pod.metadata.name} container {cs.name} is {waiting.reason}{detail}")
            elif cs.last_state and cs.last_state.terminated and cs.restart_count:
                t = cs.last_state.terminated
                reasons.append(f"pod {pod.metadata.name} container {cs.name} restarted {cs.restart_count} times "
                               f"(last exit {t.exit_code}, {t.reason})")
    rs_resource = resource_for("apps/v1", "ReplicaSet")
    for item in call("list replicasets", rs_resource.get, namespace=namespace,
                     _request_timeout=REQUEST_TIMEOUT).items:
        rs = item.to_dict()
        for cond in (rs.get("status") or {}).get("conditions") or []:
            if cond.get("type") == "ReplicaFailure" and cond.get("status") == "True":
                reasons.append(f"replicaset {rs['metadata']['name']}: {cond.get('message')}")
    events = call("list events", core.list_namespaced_event, namespace, field_selector="type=Warning",
                  _request_timeout=REQUEST_TIMEOUT).items
    events.sort(key=event_time, reverse=True)
    for event in events[:max_events]:
        line = f"{event.involved_object.kind} {event.involved_object.name}: {event.reason}: {event.message}"
        if line not in reasons:
            reasons.append(line)
    return _dedupe(reasons)


def event_time(event: client.CoreV1Event) -> datetime | None:
    """When an event last happened: its last timestamp, else its event time, else when it was created."""
    return event.last_timestamp or event.event_time or event.metadata.creation_timestamp


def _dedupe(lines: list[str]) -> list[str]:
    seen: set[str] = set()
    return [x for x in lines if not (x in seen or seen.add(x))]


SLEEP_ANNOTATION = "previews.dev/sleep-replicas"
SLEEP_FIELD_MANAGER = "pr-previews-sleep"
SCALABLE_KINDS = ("Deployment", "StatefulSet")  # what sleeps, what the costs and the cluster view count
MAX_REMEMBERED_REPLICAS = 1000  # the annotation is also writable by a manifest: never trust it beyond this


def list_workloads(namespace: str | None = None) -> list[tuple[str, dict]]:
    """(kind, object) of every Deployment and StatefulSet in one namespace, or in every one of ours (a labelled
    list, in pages of LIST_PAGE_SIZE)."""
    result = []
    for kind in SCALABLE_KINDS:
        resource = resource_for("apps/v1", kind)
        token = None
        while True:
            if namespace:
                page = call(f"list {kind} in {namespace}", resource.get, namespace=namespace,
                            _request_timeout=REQUEST_TIMEOUT)
            else:
                page = call(f"list {kind}", resource.get, label_selector=MANAGED_SELECTOR, limit=LIST_PAGE_SIZE,
                            _continue=token, _request_timeout=REQUEST_TIMEOUT)
            result.extend((kind, item.to_dict()) for item in page.items)
            token = None if namespace else getattr(page.metadata, "continue", None)
            if not token:
                break
    return result


def _remembered(annotations: dict) -> int | None:
    raw = (annotations or {}).get(SLEEP_ANNOTATION)
    if not isinstance(raw, str) or not raw.isdecimal() or not raw.isascii():
        return None
    return min(int(raw), MAX_REMEMBERED_REPLICAS)


CONFLICT_ATTEMPTS = 5


def _change_workload(kind: str, namespace: str, name: str, change: Callable[[dict], dict | None]) -> dict | None:
    """Read one workload, let `change` compute a JSON merge patch (None: nothing to do), and apply it under our
    sleep field manager, preconditioned on the resourceVersion read. Controllers write status all the time, so
    a 409 is read again and retried a few times. Returns the object after the patch, or None (gone, or no change).
    """
    resource = resource_for("apps/v1", kind)
    for attempt in range(CONFLICT_ATTEMPTS):
        try:
            obj = call(f"read {kind} {namespace}/{name}", resource.get, name=name, namespace=namespace,
                       _request_timeout=REQUEST_TIMEOUT).to_dict()
            body = change(obj)
            if body is None:
                return None
            body.setdefault("metadata", {})["resourceVersion"] = obj["metadata"]["resourceVersion"]
            return call(f"scale {kind} {namespace}/{name}", resource.patch, body=body, name=name,
                        namespace=namespace, content_type="application/merge-patch+json",
                        field_manager=SLEEP_FIELD_MANAGER, _request_timeout=REQUEST_TIMEOUT).to_dict()
        except errors.NotFound:
            return None
        except errors.Conflict:
            if attempt == CONFLICT_ATTEMPTS - 1:
                raise
    return None


def _replicas(obj: dict) -> int:
    replicas = (obj.get("spec") or {}).get("replicas")
    return 1 if replicas is None else int(replicas)


def sleep_workloads(namespace: str) -> dict[str, int]:
    """Scale every Deployment and StatefulSet in the namespace to zero, remembering each one's replicas.

    The replicas go into an annotation on the workload itself, in the same patch (one write, guarded by
    the resourceVersion just read), so the cluster alone knows how to wake it. A workload already at
    zero without our annotation was at zero on purpose and is left alone. Idempotent. HPAs are left
    alone: Kubernetes disables an HPA's scaling while its target has zero replicas, and it resumes once
    wake restores them. Returns "Kind/name" -> remembered replicas.
    """
    remembered: dict[str, int] = {}
    for kind, listed in list_workloads(namespace):
        key = f"{kind}/{listed['metadata']['name']}"

        def change(obj: dict, key: str = key) -> dict | None:
            replicas = _replicas(obj)
            if replicas == 0:
                already = _remembered(obj["metadata"].get("annotations") or {})
                if already is not None:
                    remembered[key] = already
                return None
            remembered[key] = min(replicas, MAX_REMEMBERED_REPLICAS)
            return {"metadata": {"annotations": {SLEEP_ANNOTATION: str(remembered[key])}}, "spec": {"replicas": 0}}

        _change_workload(kind, namespace, listed["metadata"]["name"], change)
    return remembered


def wake_workloads(namespace: str) -> dict[str, int]:
    """Give every workload put to sleep its remembered replicas back and drop the annotation.

    A workload whose replicas are no longer zero (a deploy's manifest set them meanwhile) keeps
    them: the newer desired state wins. Returns "Kind/name" -> metadata.generation after the change,
    which is what the rollout has to reach.
    """
    woken: dict[str, int] = {}
    for kind, listed in list_workloads(namespace):
        if SLEEP_ANNOTATION not in (listed["metadata"].get("annotations") or {}):
            continue

        def change(obj: dict) -> dict | None:
            annotations = obj["metadata"].get("annotations") or {}
            if SLEEP_ANNOTATION not in annotations:
                return None
            body: dict = {"metadata": {"annotations": {SLEEP_ANNOTATION: None}}}
            remembered = _remembered(annotations)
            if _replicas(obj) == 0 and remembered is not None:
                body["spec"] = {"replicas": remembered}
            return body

        after = _change_workload(kind, namespace, listed["metadata"]["name"], change)
        if after is not None:
            woken[f"{kind}/{listed['metadata']['name']}"] = int(after["metadata"].get("generation") or 0)
    return woken


def workload_requests(namespace: str | None = None) -> dict[str, list[Workload]]:
    """Deployments and StatefulSets with their pod specs, by namespace: one namespace, or every one of ours."""
    result: dict[str, list[Workload]] = {}
    for kind, obj in list_workloads(namespace):
        meta, spec = obj["metadata"], obj.get("spec") or {}
        replicas = spec.get("replicas")
        asleep = _remembered(meta.get("annotations") or {})
        result.setdefault(meta["namespace"], []).append(Workload(
            kind, meta["name"], 1 if replicas is None else int(replicas),
            asleep if replicas == 0 else None, ((spec.get("template") or {}).get("spec") or {})))
    return result
