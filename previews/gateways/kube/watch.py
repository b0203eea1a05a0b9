"""The Kubernetes gateway for the cluster watcher: label-selected lists and watches as plain dicts.

A sibling of `kube.py` (which owns the client configuration); errors are previews.gateways.errors.
Objects come back as the JSON the API server sent, not as the client's model
classes: the watcher keeps a small summary of each, and deserialising every
pod of a thousand previews into Python models would cost more memory and CPU
than the watcher is allowed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from previews.gateways import errors
from previews.gateways.kube.client import LIST_PAGE_SIZE, MANAGED_SELECTOR, api_client, translate
from previews.manifests.labels import GATEWAY_GROUP

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WatchedKind:
    """One collection the watcher follows: the client's cluster-wide list call, and how it is selected."""

    kind: str
    api: str  # the kubernetes client's API class
    method: str  # its cluster-wide list method (which also watches)
    label_selector: str = MANAGED_SELECTOR
    field_selector: str = ""
    # A custom resource (CustomObjectsApi.list_cluster_custom_object): its group, version and plural.
    custom: tuple[str, str, str] | None = None
    # The cluster may not serve it (its CRD is not installed): then it is followed as an empty collection.
    optional: bool = False


# Everything we create carries the managed-by label (pod templates too, so Pods and ReplicaSets
# do). Events carry no labels: only Warnings are watched, and the watcher keeps those of
# namespaces it manages.
WATCHED_KINDS: tuple[WatchedKind, ...] = (
    WatchedKind("Namespace", "CoreV1Api", "list_namespace"),
    WatchedKind("Deployment", "AppsV1Api", "list_deployment_for_all_namespaces"),
    WatchedKind("StatefulSet", "AppsV1Api", "list_stateful_set_for_all_namespaces"),
    WatchedKind("ReplicaSet", "AppsV1Api", "list_replica_set_for_all_namespaces"),
    WatchedKind("Job", "BatchV1Api", "list_job_for_all_namespaces"),
    WatchedKind("Pod", "CoreV1Api", "list_pod_for_all_namespaces"),
    WatchedKind("Event", "CoreV1Api", "list_event_for_all_namespaces", label_selector="",
                field_selector="type=Warning"),
    # Gateway routing: the Gateway's controller reports in each route's status whether it accepted it.
    WatchedKind("HTTPRoute", "CustomObjectsApi", "list_cluster_custom_object",
                custom=(GATEWAY_GROUP, "v1", "httproutes"), optional=True),
)


class KindAbsent(errors.NotFound):
    """The cluster does not serve this (optional) kind: there is nothing of it to list or watch."""


class WatchExpired(errors.Gone):
    """The resourceVersion is too old (410 Gone): list again, then watch from the new version."""


@dataclass(frozen=True)
class WatchEvent:
    type: str  # ADDED, MODIFIED, DELETED or BOOKMARK
    object: dict
    resource_version: str


def _request(kind: WatchedKind, timeout: tuple[float, float], **params):
    """The raw (unread) HTTP response of one list or watch call; raises the project's errors."""
    list_call = getattr(getattr(client, kind.api)(api_client()), kind.method)
    args = kind.custom or ()
    if kind.label_selector:
        params["label_selector"] = kind.label_selector
    if kind.field_selector:
        params["field_selector"] = kind.field_selector
    try:
        return list_call(*args, _preload_content=False, _request_timeout=timeout, **params)
    except ApiException as exc:
        if exc.status == 410:
            raise WatchExpired(f"watch {kind.kind}: resource version expired", status=410) from exc
        if exc.status == 404 and kind.optional:
            raise KindAbsent(f"the cluster does not serve {kind.kind}", status=404) from exc
        raise translate(exc, f"list {kind.kind}") from exc
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise translate(exc, f"list {kind.kind}") from exc


def list_objects(kind: WatchedKind) -> tuple[list[dict], str]:
    """Every object of the collection, in pages; returns them with the list's resourceVersion."""
    items: list[dict] = []
    token = ""
    while True:
        params = {"limit": LIST_PAGE_SIZE, **({"_continue": token} if token else {})}
        response = _request(kind, (5, 60), **params)
        try:
            body = json.loads(response.data)
        except ValueError as exc:
            raise errors.Unavailable(f"list {kind.kind}: the API answered something that is not JSON") from exc
        finally:
            response.release_conn()
        items.extend(body.get("items") or [])
        metadata = body.get("metadata") or {}
        token = metadata.get("continue") or ""
        if not token:
            return items, str(metadata.get("resourceVersion") or "")


def watch_objects(kind: WatchedKind, resource_version: str, timeout_seconds: int = 300) -> Iterator[WatchEvent]:
    """Changes after `resource_version`, with bookmarks, until the server ends the watch.

    Raises WatchExpired when the version is too old (the caller lists again) and
    errors.Unavailable when the connection fails (the caller reconnects from the
    last version it saw).
    """
    # The read timeout only has to outlast the server's own timeout and bookmark interval.
    response = _request(kind, (5, timeout_seconds + 30), watch=True, allow_watch_bookmarks=True,
                        resource_version=resource_version, timeout_seconds=timeout_seconds)
    try:
        for line in iter_resp_lines(response):
            try:
                event = json.loads(line)
            except ValueError:
                logger.warning("watch %s: skipped a line that is not JSON", kind.kind)
                continue
            if not isinstance(event, dict) or not isinstance(event.get("object"), dict):
                logger.warning("watch %s: skipped an event without an object", kind.kind)
                continue
            obj = event["object"]
            if event.get("type") == "ERROR":
                code = obj.get("code")
                if code == 410:
                    raise WatchExpired(f"watch {kind.kind}: {obj.get('message', 'too old resource version')}",
                                       status=410)
                raise errors.Unavailable(f"watch {kind.kind}: {obj.get('message', 'error')}", status=int(code or 0))
            version = str((obj.get("metadata") or {}).get("resourceVersion") or "")
            yield WatchEvent(str(event.get("type")), obj, version)
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise translate(exc, f"watch {kind.kind}") from exc
    finally:
        response.release_conn()
