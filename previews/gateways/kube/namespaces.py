"""Our namespaces: read, created, applied, bound to our ServiceAccount, listed, and deleted with preconditions."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime

from django.conf import settings
from kubernetes import client

from previews.gateways import errors
from previews.gateways.kube.apply import apply_objects
from previews.gateways.kube.client import LIST_PAGE_SIZE, MANAGED_SELECTOR, REQUEST_TIMEOUT, api_client, call, core_api
from previews.gateways.kube.errors import NamespaceNotOurs, ProtectedNamespace
from previews.manifests.labels import FIELD_MANAGER, MANAGED_BY_LABEL, MANAGED_BY_VALUE


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
        ns = call(f"read namespace {name}", core_api().read_namespace, name, _request_timeout=REQUEST_TIMEOUT)
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
    ns = call(f"apply namespace {name}", core_api().patch_namespace, name, body, field_manager=FIELD_MANAGER,
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
        ns = call(f"create namespace {name}", core_api().create_namespace, body, field_manager=FIELD_MANAGER,
                  _request_timeout=REQUEST_TIMEOUT)
    except errors.Conflict:  # AlreadyExists
        return None
    return _namespace_info(ns)


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
        result = call("check access", authorization.create_self_subject_access_review, review,
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
        response = call(f"delete namespace {name}", core_api().delete_namespace, name, body=body,
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
        return core_api().list_namespace_with_http_info(label_selector=MANAGED_SELECTOR, limit=LIST_PAGE_SIZE,
                                                        _continue=continue_token, _request_timeout=REQUEST_TIMEOUT)

    while True:
        items, _status, headers = call("list managed namespaces", page, token)
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
