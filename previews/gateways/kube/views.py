"""The dashboard's live view of one preview's namespace: workloads, pods and recent events, for people.

Part of the Kubernetes gateway (it reads through `kube`'s client, retries and errors); kept apart from
`kube.py`, which is what the engine needs to apply, watch and delete.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

# The gateway's own helpers (as kube_watch uses them): calls with its retries and errors.
from previews.gateways.kube.client import REQUEST_TIMEOUT, call, core_api
from previews.gateways.kube.namespaces import read_namespace
from previews.gateways.kube.workloads import event_time, list_workloads


@dataclass(frozen=True)
class WorkloadView:
    kind: str
    name: str
    ready: int
    desired: int


@dataclass(frozen=True)
class PodView:
    name: str
    phase: str
    ready: bool
    restarts: int
    waiting: str  # e.g. "ImagePullBackOff: Back-off pulling image ..." or ""
    containers: tuple[str, ...] = ()  # init containers first, as the logs view lists them


@dataclass(frozen=True)
class EventView:
    type: str
    reason: str
    object: str
    message: str
    at: datetime | None


@dataclass(frozen=True)
class NamespaceOverview:
    exists: bool
    phase: str = ""
    workloads: list[WorkloadView] = field(default_factory=list)
    pods: list[PodView] = field(default_factory=list)
    events: list[EventView] = field(default_factory=list)


def namespace_overview(namespace: str, max_events: int = 10) -> NamespaceOverview:
    """Deployments and StatefulSets with ready counts, pods with phase and waiting reason, recent events."""
    info = read_namespace(namespace)
    if info is None:
        return NamespaceOverview(exists=False)
    workloads = [WorkloadView(kind, obj["metadata"]["name"], (obj.get("status") or {}).get("readyReplicas") or 0,
                              (obj.get("spec") or {}).get("replicas", 1))
                 for kind, obj in list_workloads(namespace)]
    core = core_api()
    pods = []
    for pod in call("list pods", core.list_namespaced_pod, namespace, _request_timeout=REQUEST_TIMEOUT).items:
        statuses = pod.status.container_statuses or []
        waiting = [f"{cs.state.waiting.reason}: {cs.state.waiting.message or ''}".rstrip(": ")
                   for cs in statuses if cs.state and cs.state.waiting and cs.state.waiting.reason]
        containers = tuple(c.name for c in (pod.spec.init_containers or []) + (pod.spec.containers or []))
        pods.append(PodView(pod.metadata.name, pod.status.phase or "", bool(statuses) and all(
            cs.ready for cs in statuses), sum(cs.restart_count or 0 for cs in statuses), "; ".join(waiting),
            containers))
    raw_events = call("list events", core.list_namespaced_event, namespace,
                      _request_timeout=REQUEST_TIMEOUT).items
    raw_events.sort(key=event_time, reverse=True)
    events = [EventView(e.type or "", e.reason or "", f"{e.involved_object.kind}/{e.involved_object.name}",
                        e.message or "", event_time(e))
              for e in raw_events[:max_events]]
    return NamespaceOverview(True, info.phase, sorted(workloads, key=lambda w: (w.kind, w.name)),
                             sorted(pods, key=lambda p: p.name), events)


LOG_TIMEOUT = (2, 3)  # connect, read seconds: a log tail is read while a person, or the watcher, waits
MAX_LOG_LINES = 200
MAX_LOG_BYTES = 64 * 1024


def container_log(namespace: str, pod: str, container: str, *, previous: bool = False, lines: int = 20,
                  max_bytes: int = 8192) -> str:
    """The last `lines` lines (at most `max_bytes`) of one container's log, as kubelet serves `pods/log`;
    `previous` for the run before a restart. Raises the gateway's errors (NotFound, Unavailable, ...)."""
    lines, max_bytes = max(1, min(lines, MAX_LOG_LINES)), max(1, min(max_bytes, MAX_LOG_BYTES))
    return call("read a container's log", core_api().read_namespaced_pod_log, pod, namespace, container=container,
                previous=previous, tail_lines=lines, limit_bytes=max_bytes, retry=False,
                _request_timeout=LOG_TIMEOUT)
