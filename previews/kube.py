"""The Kubernetes gateway: with its siblings the only modules that import the `kubernetes` client.

Everything here speaks the project's own terms (namespaces we manage, objects
to apply, rollout outcomes) and raises previews.gateways.errors. Transient API
failures (429, 5xx, connection errors) are retried with bounded backoff.
Siblings: `kube_watch.py` (the watcher's raw lists and watches) and
`kube_view.py` (the dashboard's live view of a namespace).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import TypeVar

import urllib3
from django.conf import settings
from kubernetes import client, config, dynamic
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic.exceptions import DynamicApiError, ResourceNotFoundError

from previews.cost import Workload
from previews.gateways import errors
from previews.manifests import (
    ALLOWED_KINDS,
    FIELD_MANAGER,
    GATEWAY_GROUP,
    MANAGED_BY_LABEL,
    MANAGED_BY_VALUE,
    ROUTE_KINDS,
)

logger = logging.getLogger(__name__)

MANAGED_SELECTOR = f"{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"
RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0)
REQUEST_TIMEOUT = (5, 30)  # connect, read seconds


# --- errors: the hierarchy is previews.gateways.errors; these are the refusals of this gateway ---------------


class NamespaceNotOurs(errors.Conflict):
    """The namespace exists without our managed-by label, or belongs to another preview; never touched."""


class ProtectedNamespace(errors.GatewayError):
    """A protected namespace (kube-system, default, staging, ...) was asked for."""


class KindNotServed(errors.NotFound):
    """The cluster does not serve this kind (its CRD is not installed, or the version is not served)."""


def _translate(exc: Exception, action: str) -> errors.GatewayError:
    """The client's exception as one of ours (the caller raises it `from exc`)."""
    if isinstance(exc, ApiException | DynamicApiError):
        status = int(getattr(exc, "status", 0) or 0)
        cls = errors.for_status(status) if status else errors.GatewayError
        return cls(f"{action}: {_api_message(exc)}", status=status, reason=str(getattr(exc, "reason", "") or ""))
    return errors.Unavailable(f"{action}: the Kubernetes API is unreachable ({exc.__class__.__name__}: {exc})")


def _api_message(exc: Exception) -> str:
    body = getattr(exc, "body", None)
    if body:
        try:
            data = json.loads(body)
            if isinstance(data, dict) and data.get("message"):
                return str(data["message"])
        except (ValueError, TypeError):
            pass
    summary = getattr(exc, "summary", None)
    if callable(summary):
        return summary()
    return f"HTTP {getattr(exc, 'status', '?')} {getattr(exc, 'reason', '')}".strip()


def _call(action: str, fn: Callable, *args, retry: bool = True, **kwargs):
    """Run one API call, retrying 429/5xx/connection errors with bounded backoff (unless retry=False)."""
    for attempt, delay in enumerate((*RETRY_DELAYS, None) if retry else (None,)):
        try:
            return fn(*args, **kwargs)
        except (ApiException, DynamicApiError) as exc:
            if getattr(exc, "status", 0) not in errors.RETRY_STATUSES or delay is None:
                raise _translate(exc, action) from exc
            logger.warning("%s: HTTP %s, retry %d in %.1fs", action, exc.status, attempt + 1, delay)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            if delay is None:
                raise _translate(exc, action) from exc
            logger.warning("%s: %s, retry %d in %.1fs", action, exc, attempt + 1, delay)
        time.sleep(delay)
    raise AssertionError("unreachable")


# --- the client -------------------------------------------------------------------------

_local = threading.local()


def api_client() -> client.ApiClient:
    """One ApiClient per thread, from the kubeconfig if set (KUBECONFIG), else the in-cluster service account."""
    api = getattr(_local, "api", None)
    if api is None:
        kubeconfig = settings.PREVIEWS_KUBECONFIG
        try:
            if kubeconfig:
                api = config.new_client_from_config(
                    config_file=kubeconfig, context=settings.PREVIEWS_KUBE_CONTEXT or None
                )
            else:
                configuration = client.Configuration()
                config.load_incluster_config(client_configuration=configuration)
                api = client.ApiClient(configuration)
        except (config.ConfigException, OSError) as exc:
            raise errors.Unavailable(f"no usable Kubernetes configuration: {exc}") from exc
        _local.api = api
    return api


def preload() -> None:
    """Import the client modules the service uses now rather than on first use (see `manage.py qcluster`)."""
    for name in ("ApiClient", "Configuration", "CoreV1Api", "VersionApi", "AuthorizationV1Api", "V1Namespace",
                 "V1DeleteOptions", "V1Preconditions", "V1SelfSubjectAccessReview"):
        getattr(client, name)


def _core() -> client.CoreV1Api:
    return client.CoreV1Api(api_client())


def _dynamic() -> dynamic.DynamicClient:
    dyn = getattr(_local, "dynamic", None)
    if dyn is None:
        dyn = _call("discover the API", dynamic.DynamicClient, api_client())
        _local.dynamic = dyn
    return dyn


def reset_clients() -> None:
    """Forget this thread's clients (after the kubeconfig changed)."""
    _local.__dict__.clear()


def ping() -> str:
    """The server's version; raises errors.Unavailable (or another GatewayError) unless the API answers us."""
    # No retries: a readiness probe must answer quickly, and the next probe is the retry.
    version = _call("check the API", client.VersionApi(api_client()).get_code, retry=False, _request_timeout=(2, 5))
    return version.git_version


# --- namespaces -----------------------------------------------------------------------------


@dataclass(frozen=True)
class NamespaceInfo:
    name: str
    uid: str
    labels: dict[str, str]
    annotations: dict[str, str]
    created_at: datetime
    phase: str  # Active or Terminating
    deletion_started_at: datetime | None
    resource_version: str = ""  # as read: a delete preconditioned on it applies only to the namespace as seen

    @property
    def managed(self) -> bool:
        return self.labels.get(MANAGED_BY_LABEL) == MANAGED_BY_VALUE


def _namespace_info(ns: client.V1Namespace) -> NamespaceInfo:
    meta = ns.metadata
    return NamespaceInfo(
        name=meta.name,
        uid=meta.uid,
        labels=dict(meta.labels or {}),
        annotations=dict(meta.annotations or {}),
        created_at=meta.creation_timestamp,
        phase=(ns.status.phase if ns.status else None) or "Active",
        deletion_started_at=meta.deletion_timestamp,
        resource_version=meta.resource_version or "",
    )


def _refuse_protected(name: str) -> None:
    if name in settings.PREVIEWS_PROTECTED_NAMESPACES:
        raise ProtectedNamespace(f"namespace {name!r} is protected and is never created, adopted or deleted")


def read_namespace(name: str) -> NamespaceInfo | None:
    try:
        ns = _call(f"read namespace {name}", _core().read_namespace, name, _request_timeout=REQUEST_TIMEOUT)
    except errors.NotFound:
        return None
    return _namespace_info(ns)


_READ = object()


def ensure_namespace(name: str, labels: dict[str, str], annotations: dict[str, str],
                     existing: NamespaceInfo | object | None = _READ) -> NamespaceInfo:
    """Create or update our namespace. Refuses protected names and namespaces someone else owns.

    `existing` is what a `read_namespace` of the caller just returned (it is read here otherwise).
    """
    _refuse_protected(name)
    if existing is _READ:
        existing = read_namespace(name)
    if existing is not None:
        if not existing.managed:
            raise NamespaceNotOurs(f"namespace {name!r} already exists and is not managed by this service; "
                                   "it is left alone")
        for key in labels:
            if key != MANAGED_BY_LABEL and key in existing.labels and existing.labels[key] != labels[key]:
                raise NamespaceNotOurs(f"namespace {name!r} belongs to another preview ({key}="
                                       f"{existing.labels[key]!r})")
        if existing.phase == "Terminating":
            raise errors.Conflict(f"namespace {name!r} is still being deleted; try again when it is gone",
                                  status=409)
    body = {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": labels, "annotations": annotations}}
    ns = _call(f"apply namespace {name}", _core().patch_namespace, name, body, field_manager=FIELD_MANAGER,
               force=True, _content_type="application/apply-patch+yaml", _request_timeout=REQUEST_TIMEOUT)
    return _namespace_info(ns)


def create_namespace(name: str, labels: dict[str, str], annotations: dict[str, str]) -> NamespaceInfo | None:
    """Create our namespace if no namespace of that name exists: one request where `ensure_namespace` takes two.

    Returns None, having changed nothing, when a namespace of that name exists (whoever's it is): the caller
    then reads it and goes the careful way (`ensure_namespace`). Created under our field manager; a later
    apply under the same manager shares the fields, keys and values being the same.
    """
    _refuse_protected(name)
    body = {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": labels, "annotations": annotations}}
    try:
        ns = _call(f"create namespace {name}", _core().create_namespace, body, field_manager=FIELD_MANAGER,
                   _request_timeout=REQUEST_TIMEOUT)
    except errors.Conflict:  # AlreadyExists
        return None
    return _namespace_info(ns)


LIST_PAGE_SIZE = 500


def ensure_access(namespace: str, cluster_role: str, service_account: str, labels: dict[str, str],
                  timeout: float = 10) -> None:
    """Bind `cluster_role` to our ServiceAccount inside one preview namespace, and wait until it takes effect.

    With least-privilege RBAC (deploy/) the service may manage the allowed kinds only in namespaces
    where this RoleBinding exists, so a namespace it did not create stays out of reach.
    """
    sa_namespace, sa_name = service_account.split("/", 1)
    body = {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "pr-previews", "namespace": namespace, "labels": labels},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_role},
        "subjects": [{"kind": "ServiceAccount", "name": sa_name, "namespace": sa_namespace}],
    }
    apply_objects([body])
    review = client.V1SelfSubjectAccessReview(spec=client.V1SelfSubjectAccessReviewSpec(
        resource_attributes=client.V1ResourceAttributes(namespace=namespace, verb="create", group="apps",
                                                        resource="deployments")))
    deadline = time.monotonic() + timeout
    authorization = client.AuthorizationV1Api(api_client())
    while True:
        result = _call("check access", authorization.create_self_subject_access_review, review,
                       _request_timeout=REQUEST_TIMEOUT)
        if result.status.allowed:
            return
        if time.monotonic() > deadline:
            raise errors.GatewayError(f"the RoleBinding in {namespace} did not grant access within {timeout:.0f}s: "
                            f"{result.status.reason or 'denied'}", status=403)
        time.sleep(0.2)


def list_managed_namespaces() -> list[NamespaceInfo]:
    """Every namespace carrying our managed-by label (one labelled list, in pages of LIST_PAGE_SIZE)."""
    return list_managed_namespaces_with_clock().namespaces


@dataclass(frozen=True)
class DeleteOutcome:
    gone: bool  # True when the namespace no longer exists
    terminating_since: datetime | None = None
    changed: bool = False  # a listed delete only: the namespace is not as listed (see delete_listed_namespace)


def delete_namespace(name: str, uid: str | None = None) -> DeleteOutcome:
    """Delete one of our namespaces. 404 counts as done; never force-finalizes.

    One read (is it ours, which UID) and one delete preconditioned on that UID. With `uid`, the delete
    applies only to that exact namespace, so a namespace recreated under the same name is not deleted
    by mistake.
    """
    _refuse_protected(name)
    info = read_namespace(name)
    if info is None:
        return DeleteOutcome(gone=True)
    if not info.managed:
        raise NamespaceNotOurs(f"namespace {name!r} is not managed by this service; it is never deleted")
    if uid is not None and info.uid != uid:
        raise NamespaceNotOurs(f"namespace {name!r} has uid {info.uid}, not {uid}; it was recreated and is "
                               "left alone")
    if info.phase == "Terminating":
        return DeleteOutcome(gone=False, terminating_since=info.deletion_started_at)
    try:
        return _delete(name, client.V1Preconditions(uid=info.uid))
    except errors.Conflict:  # terminating since the read (or changed): say what it is now
        after = read_namespace(name)
        return DeleteOutcome(gone=after is None, terminating_since=after.deletion_started_at if after else None)


def delete_listed_namespace(name: str, uid: str, resource_version: str) -> DeleteOutcome:
    """Delete a namespace exactly as a labelled list showed it: one request, no read.

    The delete is preconditioned on the listed UID and resourceVersion, so it applies only if the namespace
    is the one listed and unchanged since (still carrying our managed-by label). If it is not (relabelled,
    re-applied, recreated, already terminating), nothing is deleted and the outcome says `changed`: the
    caller takes the careful path (`delete_namespace`, which reads and checks). 404 counts as done.
    """
    _refuse_protected(name)
    if not uid or not resource_version:
        return DeleteOutcome(gone=False, changed=True)
    try:
        return _delete(name, client.V1Preconditions(uid=uid, resource_version=resource_version))
    except errors.Conflict:
        return DeleteOutcome(gone=False, changed=True)


def _delete(name: str, preconditions: client.V1Preconditions) -> DeleteOutcome:
    """One preconditioned DELETE; its answer (the namespace, now terminating) says what became of it."""
    body = client.V1DeleteOptions(preconditions=preconditions, propagation_policy="Background")
    try:
        response = _call(f"delete namespace {name}", _core().delete_namespace, name, body=body,
                         _preload_content=False, _request_timeout=REQUEST_TIMEOUT)
    except errors.NotFound:
        return DeleteOutcome(gone=True)
    try:
        answer = json.loads(response.data or b"{}")
    except ValueError:
        answer = {}
    if answer.get("kind") != "Namespace":
        return DeleteOutcome(gone=True)  # a Status: deleted outright (no finalizers left)
    started = (answer.get("metadata") or {}).get("deletionTimestamp")
    return DeleteOutcome(gone=False, terminating_since=_rfc3339(started))


def _rfc3339(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


# --- objects ---------------------------------------------------------------------------------


def _resource(api_version: str, kind: str):
    try:
        return _dynamic().resources.get(api_version=api_version, kind=kind)
    except ResourceNotFoundError as exc:
        hint = ""
        if api_version.startswith(GATEWAY_GROUP + "/"):
            hint = ("; install the Gateway API CRDs (standard channel) in the cluster, or set the repository's "
                    "routing to ingress")
        raise KindNotServed(f"the cluster does not serve {kind} in {api_version}{hint}", status=404) from exc


WORKLOAD_KINDS = ("Deployment", "StatefulSet", "Job")
# Kinds whose controllers create pods: applied after everything else of the same call, so the
# ConfigMaps, Secrets, ServiceAccounts and claims their pods use exist before the first pod does.
POD_CREATING_KINDS = frozenset(("Deployment", "StatefulSet", "Job", "CronJob"))
T = TypeVar("T")
R = TypeVar("R")

CONCURRENCY = 8  # requests one process has in flight at once (applies of a wave, a reaper cycle's deletes)

_pool: tuple[int, ThreadPoolExecutor] | None = None
_pool_lock = threading.Lock()


def map_concurrently(fn: Callable[[T], R], items: list[T]) -> list[R]:
    """`fn` over `items` on a small per-process pool of threads, results in order.

    Every call finishes before this returns; if some raised, the first in `items` order is raised. The
    pool's threads live as long as the process, so each builds its API client once (clients are per
    thread); a new pool follows a fork (django-q forks its workers, and threads do not survive a fork).
    """
    global _pool
    if len(items) <= 1:
        return [fn(item) for item in items]
    with _pool_lock:
        if _pool is None or _pool[0] != os.getpid():
            _pool = (os.getpid(), ThreadPoolExecutor(CONCURRENCY, thread_name_prefix="kube"))
        pool = _pool[1]
    futures = [pool.submit(fn, item) for item in items]
    for future in futures:
        future.exception()  # wait for all of them
    return [future.result() for future in futures]


def apply_waves(objects: list[dict]) -> list[list[dict]]:
    """The objects in the order they are applied: everything else first, then what creates pods."""
    first = [o for o in objects if o["kind"] not in POD_CREATING_KINDS]
    then = [o for o in objects if o["kind"] in POD_CREATING_KINDS]
    return [wave for wave in (first, then) if wave]


def apply_objects(objects: list[dict], track: tuple[str, ...] = WORKLOAD_KINDS) -> dict[str, int]:
    """Server-side apply each object under our field manager, taking ownership of conflicting fields.

    The objects of one wave (`apply_waves`) are applied concurrently: a deploy costs a few round
    trips instead of one per object. When some fail, the first failing object (in manifest order)
    raises, after the rest of its wave has finished; later waves are not applied.

    Returns the objects of the `track` kinds among them ("Kind/name": workloads, and routes whose
    status readiness waits for) with the metadata.generation the server gave each, which is what a
    rollout of this apply has to reach.
    """
    workloads: dict[str, int] = {}
    for wave in apply_waves(objects):
        # Resolved in the calling thread: the discovery client is per thread, requests may be shared.
        calls = [(obj, _resource(obj["apiVersion"], obj["kind"])) for obj in wave]
        results = map_concurrently(_apply_one, calls)
        for (obj, _), generation in zip(calls, results, strict=True):
            if obj["kind"] in track:
                workloads[f"{obj['kind']}/{obj['metadata']['name']}"] = generation
    return workloads


def _apply_one(call: tuple[dict, object]) -> int:
    """Apply one object; its metadata.generation after the apply."""
    obj, resource = call
    meta = obj["metadata"]
    # The response is read as plain JSON: the dynamic client would wrap every field of it (managedFields
    # included) in objects of its own, for one number.
    response = _call(f"apply {obj['kind']} {meta['namespace']}/{meta['name']}", resource.server_side_apply,
                     body=obj, name=meta["name"], namespace=meta["namespace"], field_manager=FIELD_MANAGER,
                     force_conflicts=True, serialize=False, _request_timeout=REQUEST_TIMEOUT)
    return int(json.loads(response.data).get("metadata", {}).get("generation") or 0)


def prune(namespace: str, label_selector: str, keep: set[tuple[str, str, str]]) -> list[str]:
    """Delete objects of the allowed kinds that carry our labels but were not rendered this time.

    A kind the cluster does not serve (the Gateway API's, without its CRDs) has nothing to prune.
    """
    deleted = []
    for kind, versions in ALLOWED_KINDS.items():
        api_version = versions[0]
        try:
            resource = _resource(api_version, kind)
        except KindNotServed:
            continue
        items = _call(f"list {kind} in {namespace}", resource.get, namespace=namespace,
                      label_selector=label_selector, _request_timeout=REQUEST_TIMEOUT).items
        for item in items:
            name = item.metadata.name
            if (api_version, kind, name) in keep:
                continue
            with contextlib.suppress(errors.NotFound):
                _call(f"delete {kind} {namespace}/{name}", resource.delete, name=name, namespace=namespace,
                      body={"propagationPolicy": "Background"}, _request_timeout=REQUEST_TIMEOUT)
            deleted.append(f"{kind}/{name}")
    return deleted


ROUTE_OBJECT_KINDS = ("Ingress", *ROUTE_KINDS)


def delete_routes(namespace: str, label_selector: str = f"{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}") -> list[str]:
    """Delete the namespace's Ingresses and HTTPRoutes that carry our labels (a sleeping preview's host is then
    served by the controller's fallback: this service's "asleep" page). A deploy applies them again."""
    deleted = []
    for kind in ROUTE_OBJECT_KINDS:
        try:
            resource = _resource(ALLOWED_KINDS[kind][0], kind)
        except KindNotServed:
            continue
        items = _call(f"list {kind} in {namespace}", resource.get, namespace=namespace,
                      label_selector=label_selector, _request_timeout=REQUEST_TIMEOUT).items
        for item in items:
            with contextlib.suppress(errors.NotFound):
                _call(f"delete {kind} {namespace}/{item.metadata.name}", resource.delete, name=item.metadata.name,
                      namespace=namespace, _request_timeout=REQUEST_TIMEOUT)
            deleted.append(f"{kind}/{item.metadata.name}")
    return deleted


def count_objects(namespace: str, kinds: tuple[str, ...] = tuple(ALLOWED_KINDS)) -> int:
    """How many objects of the allowed kinds exist in the namespace (0 if it does not exist)."""
    total = 0
    for kind in kinds:
        try:
            resource = _resource(ALLOWED_KINDS[kind][0], kind)
        except KindNotServed:
            continue
        total += len(_call(f"list {kind}", resource.get, namespace=namespace,
                           _request_timeout=REQUEST_TIMEOUT).items)
    return total


# --- rollouts -------------------------------------------------------------------------------


def explain_rollout(namespace: str, max_events: int = 5) -> list[str]:
    """Why pods are not ready: container waiting reasons, quota rejections, recent warnings."""
    reasons: list[str] = []
    core = _core()
    pods = _call("list pods", core.list_namespaced_pod, namespace, _request_timeout=REQUEST_TIMEOUT).items
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
    rs_resource = _resource("apps/v1", "ReplicaSet")
    for item in _call("list replicasets", rs_resource.get, namespace=namespace,
                      _request_timeout=REQUEST_TIMEOUT).items:
        rs = item.to_dict()
        for cond in (rs.get("status") or {}).get("conditions") or []:
            if cond.get("type") == "ReplicaFailure" and cond.get("status") == "True":
                reasons.append(f"replicaset {rs['metadata']['name']}: {cond.get('message')}")
    events = _call("list events", core.list_namespaced_event, namespace, field_selector="type=Warning",
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


# --- sleep and wake --------------------------------------------------------------------------

SLEEP_ANNOTATION = "previews.dev/sleep-replicas"
SLEEP_FIELD_MANAGER = "pr-previews-sleep"
SCALABLE_KINDS = ("Deployment", "StatefulSet")  # what sleeps, what the costs and the cluster view count
MAX_REMEMBERED_REPLICAS = 1000  # the annotation is also writable by a manifest: never trust it beyond this


def list_workloads(namespace: str | None = None) -> list[tuple[str, dict]]:
    """(kind, object) of every Deployment and StatefulSet in one namespace, or in every one of ours (a labelled
    list, in pages of LIST_PAGE_SIZE)."""
    result = []
    for kind in SCALABLE_KINDS:
        resource = _resource("apps/v1", kind)
        token = None
        while True:
            if namespace:
                page = _call(f"list {kind} in {namespace}", resource.get, namespace=namespace,
                             _request_timeout=REQUEST_TIMEOUT)
            else:
                page = _call(f"list {kind}", resource.get, label_selector=MANAGED_SELECTOR, limit=LIST_PAGE_SIZE,
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
    resource = _resource("apps/v1", kind)
    for attempt in range(CONFLICT_ATTEMPTS):
        try:
            obj = _call(f"read {kind} {namespace}/{name}", resource.get, name=name, namespace=namespace,
                        _request_timeout=REQUEST_TIMEOUT).to_dict()
            body = change(obj)
            if body is None:
                return None
            body.setdefault("metadata", {})["resourceVersion"] = obj["metadata"]["resourceVersion"]
            return _call(f"scale {kind} {namespace}/{name}", resource.patch, body=body, name=name,
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


# --- the reaper's listing: requests counted, the API server's clock ---------------------------


@dataclass(frozen=True)
class ManagedListing:
    namespaces: list[NamespaceInfo]
    requests: int  # HTTP requests the listing took: one per page, retries included
    server_time: datetime | None  # the API server's clock: the `Date` header of its first answer


def list_managed_namespaces_with_clock() -> ManagedListing:
    """`list_managed_namespaces`, also counting its requests and reading the API server's clock on the way.

    The clock costs no request of its own: every answer carries a `Date` header (a second's precision).
    """
    result: list[NamespaceInfo] = []
    requests = 0
    server_time: datetime | None = None
    token = None

    def page(continue_token: str | None):
        nonlocal requests
        requests += 1
        return _core().list_namespace_with_http_info(label_selector=MANAGED_SELECTOR, limit=LIST_PAGE_SIZE,
                                                     _continue=continue_token, _request_timeout=REQUEST_TIMEOUT)

    while True:
        items, _status, headers = _call("list managed namespaces", page, token)
        if server_time is None:
            server_time = _http_date((headers or {}).get("Date"))
        result.extend(_namespace_info(ns) for ns in items.items)
        token = items.metadata._continue
        if not token:
            return ManagedListing(result, requests, server_time)


def _http_date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
