"""The Kubernetes gateway: the only package that imports the `kubernetes` client.

Everything here speaks the project's own terms (namespaces we manage, objects to apply, rollout outcomes)
and raises previews.gateways.errors. Transient API failures (429, 5xx, connection errors) are retried with
bounded backoff. Its modules, each the one owner of its part:

- `client`: one client per thread, calls with retries and our errors, resource discovery, the request pool;
- `errors`: this gateway's refusals (a namespace not ours, a protected one, a kind the cluster does not serve);
- `namespaces`: read, create, apply, bind, list and delete our namespaces;
- `apply`: server-side apply in waves, and the prune;
- `workloads`: why a rollout is not ready, sleep and wake, what the pods request;
- `secrets`: the Secrets the service copies (a repository's TLS certificate);
- `watch`: the cluster watcher's raw lists and watches;
- `views`: the dashboard's live view of one namespace.

The names below are the gateway's interface for the engine; `watch` and `views` are used as modules.
"""

from previews.gateways.kube.apply import (
    POD_CREATING_KINDS,
    WORKLOAD_KINDS,
    apply_objects,
    apply_waves,
    prune,
)
from previews.gateways.kube.client import (
    CONCURRENCY,
    LIST_PAGE_SIZE,
    MANAGED_SELECTOR,
    REQUEST_TIMEOUT,
    api_client,
    map_concurrently,
    ping,
    preload,
    reset_clients,
)
from previews.gateways.kube.errors import KindNotServed, NamespaceNotOurs, ProtectedNamespace
from previews.gateways.kube.namespaces import (
    DeleteOutcome,
    ManagedListing,
    NamespaceInfo,
    create_namespace,
    delete_listed_namespace,
    delete_namespace,
    ensure_access,
    ensure_namespace,
    list_managed_namespaces,
    list_managed_namespaces_with_clock,
    read_namespace,
)
from previews.gateways.kube.secrets import read_tls_secret
from previews.gateways.kube.workloads import (
    MAX_REMEMBERED_REPLICAS,
    SCALABLE_KINDS,
    SLEEP_ANNOTATION,
    SLEEP_FIELD_MANAGER,
    event_time,
    explain_rollout,
    list_workloads,
    sleep_workloads,
    wake_workloads,
    workload_requests,
)

__all__ = [
    "CONCURRENCY", "LIST_PAGE_SIZE", "MANAGED_SELECTOR", "MAX_REMEMBERED_REPLICAS", "POD_CREATING_KINDS",
    "REQUEST_TIMEOUT", "SCALABLE_KINDS", "SLEEP_ANNOTATION", "SLEEP_FIELD_MANAGER", "WORKLOAD_KINDS",
    "DeleteOutcome", "KindNotServed", "ManagedListing", "NamespaceInfo", "NamespaceNotOurs", "ProtectedNamespace",
    "api_client", "apply_objects", "apply_waves", "create_namespace", "delete_listed_namespace", "delete_namespace",
    "ensure_access", "ensure_namespace", "event_time", "explain_rollout", "list_managed_namespaces",
    "list_managed_namespaces_with_clock", "list_workloads", "map_concurrently", "ping", "preload", "prune",
    "read_namespace", "read_tls_secret", "reset_clients", "sleep_workloads", "wake_workloads", "workload_requests",
]
