"""What a rollout's state is, from what the watcher has seen. Pure functions, no I/O.

The watcher keeps a small summary of every object it follows (`summarize`),
grouped by namespace (`NamespaceObjects`). `assess` decides, for the workloads
a deploy applied, whether the preview is ready, still progressing, or failing
for a reason a person can act on (an image that cannot be pulled, a crash
loop, no room on the cluster, a quota or Pod Security refusal). With gateway
routing the preview's HTTPRoutes can be part of the rollout: done once the
Gateway's controller reports them Accepted with their references resolved,
for our Gateway, at the generation applied; failing when it refuses them.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from enum import StrEnum

from previews.manifests import GATEWAY_GROUP, ROUTE_KINDS, WORKLOAD_KINDS, GatewayRef

# Container waiting reasons that do not fix themselves by waiting a little longer.
FAILING_WAIT_REASONS = frozenset({
    "ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull", "CrashLoopBackOff",
    "CreateContainerConfigError", "CreateContainerError", "RunContainerError",
})
# The route conditions a Gateway's controller sets for each parent; both True means traffic can flow.
ROUTE_CONDITIONS = ("Accepted", "ResolvedRefs")
MAX_EVENTS_PER_NAMESPACE = 20
MAX_EXTRA_EVENTS = 3  # events quoted beside a failure's own reasons
MAX_LOG_SOURCES = 2  # containers whose log tail a failure shows
MAX_MESSAGE = 2000


class Malformed(ValueError):
    """An object the watcher cannot make sense of; it is skipped."""


def _int(value, default: int = 0) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise Malformed(f"expected a whole number, got {value!r}")
    return value


def _str(value) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise Malformed(f"expected a string, got {value!r}")
    return value


def _dict(value) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Malformed(f"expected an object, got {type(value).__name__}")
    return value


def _list(value) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise Malformed(f"expected a list, got {type(value).__name__}")
    return value


def _conditions(status: dict) -> dict[str, tuple[str, str, str]]:
    result = {}
    for cond in _list(status.get("conditions")):
        cond = _dict(cond)
        result[_str(cond.get("type"))] = (_str(cond.get("status")), _str(cond.get("reason")),
                                          _str(cond.get("message")))
    return result


def _route_parents(namespace: str, status: dict) -> list[dict]:
    """Each parent a controller reported on: its reference (defaults filled in) and its conditions
    (type -> (status, reason, message, observedGeneration))."""
    parents = []
    for entry in _list(status.get("parents")):
        entry = _dict(entry)
        ref = _dict(entry.get("parentRef"))
        conditions = {}
        for cond in _list(entry.get("conditions")):
            cond = _dict(cond)
            conditions[_str(cond.get("type"))] = (_str(cond.get("status")), _str(cond.get("reason")),
                                                  _str(cond.get("message")), _int(cond.get("observedGeneration")))
        parents.append({
            "ref": (_str(ref.get("group")) if ref.get("group") is not None else GATEWAY_GROUP,
                    _str(ref.get("kind")) or "Gateway", _str(ref.get("namespace")) or namespace,
                    _str(ref.get("name")), _str(ref.get("sectionName"))),
            "controller": _str(entry.get("controllerName")),
            "conditions": conditions,
        })
    return parents


def parent_key(gateway: GatewayRef) -> tuple[str, str, str, str, str]:
    """How our Gateway appears in a route's status.parents[].parentRef, defaults filled in."""
    return GATEWAY_GROUP, "Gateway", gateway.namespace, gateway.name, gateway.section


def _owner(meta: dict) -> tuple[str, str]:
    for ref in _list(meta.get("ownerReferences")):
        ref = _dict(ref)
        if ref.get("controller"):
            return _str(ref.get("kind")), _str(ref.get("name"))
    return "", ""


def summarize(kind: str, obj: dict) -> tuple[str, str, dict]:
    """(namespace, name, summary) of one object: only what the decisions below read.

    Raises Malformed for an object without a name or with fields of the wrong type.
    """
    meta = _dict(obj.get("metadata"))
    name, namespace = _str(meta.get("name")), _str(meta.get("namespace"))
    if not name or (kind != "Namespace" and not namespace):
        raise Malformed(f"{kind} without a name or namespace")
    spec, status = _dict(obj.get("spec")), _dict(obj.get("status"))
    if kind == "Namespace":
        labels = _dict(meta.get("labels"))
        return name, name, {"uid": _str(meta.get("uid")), "phase": _str(status.get("phase")) or "Active",
                            "labels": {k: _str(v) for k, v in labels.items()}}
    if kind in ("Deployment", "StatefulSet"):
        return namespace, name, {
            "generation": _int(meta.get("generation")),
            "replicas": _int(spec.get("replicas"), 1),
            "observed": _int(status.get("observedGeneration")),
            "total": _int(status.get("replicas")),
            "updated": _int(status.get("updatedReplicas")),
            "ready": _int(status.get("readyReplicas")),
            "available": _int(status.get("availableReplicas")),
            "conditions": _conditions(status),
        }
    if kind == "ReplicaSet":
        return namespace, name, {"owner": _owner(meta), "conditions": _conditions(status)}
    if kind == "Job":
        return namespace, name, {"generation": _int(meta.get("generation")), "conditions": _conditions(status),
                                 "pods": _int(status.get("active")) + _int(status.get("succeeded"))
                                 + _int(status.get("failed"))}
    if kind == "Pod":
        waiting, restarts, exited = [], [], []
        for cs in _list(status.get("initContainerStatuses")) + _list(status.get("containerStatuses")):
            cs = _dict(cs)
            container, state = _str(cs.get("name")), _dict(cs.get("state"))
            state_waiting = _dict(state.get("waiting"))
            if state_waiting.get("reason"):
                waiting.append((container, _str(state_waiting.get("reason")), _str(state_waiting.get("message"))))
            count = _int(cs.get("restartCount"))
            last = _dict(_dict(cs.get("lastState")).get("terminated"))
            # A container that exited with an error and is not ready: crashing, whether kubelet is backing off
            # or has just started it again (its state flips between the two in a crash loop).
            if count and _int(last.get("exitCode")) and not cs.get("ready"):
                restarts.append((container, count, _int(last.get("exitCode")), _str(last.get("reason"))))
            terminated = _dict(state.get("terminated"))
            if _int(terminated.get("exitCode")):
                exited.append((container, _int(terminated.get("exitCode")), _str(terminated.get("reason"))))
        scheduled = _conditions(status).get("PodScheduled")
        unschedulable = scheduled[2] if scheduled and scheduled[0] == "False" and scheduled[1] == "Unschedulable" \
            else ""
        return namespace, name, {"owner": _owner(meta), "deleting": bool(meta.get("deletionTimestamp")),
                                 "phase": _str(status.get("phase")), "waiting": waiting, "restarts": restarts,
                                 "exited": exited, "unschedulable": unschedulable}
    if kind in ROUTE_KINDS:
        return namespace, name, {"generation": _int(meta.get("generation")),
                                 "parents": _route_parents(namespace, status)}
    if kind == "Event":
        involved = _dict(obj.get("involvedObject"))
        return namespace, name, {
            "object": (_str(involved.get("kind")), _str(involved.get("name"))),
            "reason": _str(obj.get("reason")), "message": _str(obj.get("message")),
            "at": _str(obj.get("lastTimestamp")) or _str(obj.get("eventTime")) or _str(meta.get("creationTimestamp")),
        }
    raise Malformed(f"unexpected kind {kind}")


@dataclass
class NamespaceObjects:
    """The summaries of one namespace's objects, by kind and name."""

    workloads: dict[tuple[str, str], dict] = field(default_factory=dict)  # (kind, name) -> summary
    routes: dict[tuple[str, str], dict] = field(default_factory=dict)  # (kind, name) -> summary
    replicasets: dict[str, dict] = field(default_factory=dict)
    pods: dict[str, dict] = field(default_factory=dict)
    events: OrderedDict[str, dict] = field(default_factory=OrderedDict)

    def _table(self, kind: str) -> dict | None:
        return {"ReplicaSet": self.replicasets, "Pod": self.pods, "Event": self.events}.get(kind)

    def forget_kind(self, kind: str) -> bool:
        """Forget every object of one kind (before a fresh list); True if there were any."""
        if kind in WORKLOAD_KINDS or kind in ROUTE_KINDS:
            table = self.workloads if kind in WORKLOAD_KINDS else self.routes
            keys = [k for k in table if k[0] == kind]
            for k in keys:
                del table[k]
            return bool(keys)
        table = self._table(kind)
        had = bool(table)
        if table is not None:
            table.clear()
        return had

    def put(self, kind: str, name: str, summary: dict | None) -> None:
        """Store (or, with None, forget) one object's summary."""
        if kind in WORKLOAD_KINDS:
            table, key = self.workloads, (kind, name)
        elif kind in ROUTE_KINDS:
            table, key = self.routes, (kind, name)
        else:
            table, key = self._table(kind), name
            if table is None:
                return
        if summary is None:
            table.pop(key, None)
            return
        table[key] = summary
        if kind == "Event":
            self.events.move_to_end(name)
            while len(self.events) > MAX_EVENTS_PER_NAMESPACE:
                self.events.popitem(last=False)


class State(StrEnum):
    READY = "ready"
    PROGRESSING = "progressing"
    FAILING = "failing"


@dataclass(frozen=True)
class LogSource:
    """A container whose own words explain a failure: read `previous` for the run that crashed."""

    pod: str
    container: str
    previous: bool
    exit_code: int


@dataclass(frozen=True)
class Verdict:
    state: State
    pending: list[str] = field(default_factory=list)  # what is not done yet, e.g. "Deployment web: 0/2 ready"
    reasons: list[str] = field(default_factory=list)  # why it is failing (or, when progressing, warnings seen)
    logs: list[LogSource] = field(default_factory=list)  # whose log tail to show with a failure


def rolled_out(kind: str, summary: dict) -> bool:
    """kubectl rollout status's rule: the controller saw this generation and every replica is new and ready."""
    want = summary["replicas"]
    if summary["observed"] < summary["generation"]:
        return False
    if kind == "Deployment":
        return summary["updated"] >= want and summary["total"] <= summary["updated"] and summary["available"] >= want
    return summary["updated"] >= want and summary["ready"] >= want


def _job_done(summary: dict) -> tuple[bool, str]:
    """(complete, failure reason) of a Job."""
    conditions = summary["conditions"]
    if conditions.get("Complete", ("",))[0] == "True":
        return True, ""
    failed = conditions.get("Failed")
    if failed and failed[0] == "True":
        return False, f"{failed[1]}: {failed[2]}".strip(": ") or "failed"
    return False, ""


def _owned_by(objects: NamespaceObjects, owner: tuple[str, str], expected: set[tuple[str, str]]) -> bool:
    kind, name = owner
    if kind == "ReplicaSet":
        rs = objects.replicasets.get(name)
        return rs is not None and rs["owner"] in expected
    return owner in expected


def _namespace_still_starting(message: str) -> bool:
    """A pod refused because the new namespace is not fully set up yet: its ServiceAccount does not exist
    (seen taking over a minute on a busy control plane), or the quota controller has not counted its
    ResourceQuota yet ("status unknown for quota"). The controllers retry once those catch up."""
    return ('serviceaccount "' in message and "not found" in message) or "status unknown for quota" in message


def _still_missing_pods(kind: str, name: str, objects: NamespaceObjects) -> bool:
    summary = objects.workloads.get((kind, name))
    if summary is None:
        return False
    if kind == "StatefulSet":
        return summary["total"] < summary["replicas"]
    if kind == "Job":
        return summary["pods"] == 0
    return False


def _dedupe(lines: list[str]) -> list[str]:
    seen: set[str] = set()
    return [x for x in lines if not (x in seen or seen.add(x))]


def route_accepted(summary: dict, gateway: GatewayRef, generation: int) -> tuple[bool, str]:
    """(accepted, why not) of one route for our Gateway, judged only by conditions the controller wrote for
    `generation` or later: Accepted and ResolvedRefs both True is accepted; either False is a refusal with the
    controller's reason and message; anything else (no entry for our parent yet, stale or Unknown conditions)
    is neither."""
    entry = next((p for p in summary["parents"] if p["ref"] == parent_key(gateway)), None)
    if entry is None:
        return False, ""
    current = {t: c for t, c in entry["conditions"].items() if t in ROUTE_CONDITIONS and c[3] >= generation}
    refusals = [f"{t}: {c[1] or 'False'}" + (f": {c[2]}" if c[2] else "") for t, c in sorted(current.items())
                if c[0] == "False"]
    if refusals:
        return False, "; ".join(refusals)
    return all(current.get(t, ("",))[0] == "True" for t in ROUTE_CONDITIONS), ""


def _assess_route(kind: str, name: str, generation: int, objects: NamespaceObjects, gateway: GatewayRef,
                  pending: list[str], failing: list[str]) -> None:
    summary = objects.routes.get((kind, name))
    if summary is None or summary["generation"] < generation:
        pending.append(f"{kind} {name}: not seen yet")
        return
    accepted, refusal = route_accepted(summary, gateway, generation)
    if refusal:
        pending.append(f"{kind} {name}: not accepted by Gateway {gateway}")
        failing.append(f"{kind} {name} was refused by Gateway {gateway}: {refusal}")
    elif not accepted:
        pending.append(f"{kind} {name}: waiting for Gateway {gateway} to accept it")


def assess(expected: dict[str, int], objects: NamespaceObjects, gateway: GatewayRef | None = None) -> Verdict:
    """Ready, progressing or failing, for the workloads and routes `expected` ("Kind/name" -> metadata.generation
    applied). Routes are judged for `gateway`, the one they attach to."""
    wanted: set[tuple[str, str]] = set()
    pending: list[str] = []
    failing: list[str] = []
    for key, generation in sorted(expected.items()):
        kind, _, name = key.partition("/")
        wanted.add((kind, name))
        if kind in ROUTE_KINDS:
            _assess_route(kind, name, generation, objects, gateway or GatewayRef(), pending, failing)
            continue
        summary = objects.workloads.get((kind, name))
        if summary is None or summary["generation"] < generation:
            pending.append(f"{kind} {name}: not seen yet")
        elif kind == "Job":
            done, failure = _job_done(summary)
            if failure:
                failing.append(f"Job {name} failed: {failure}")
            elif not done:
                pending.append(f"Job {name}: not complete")
        elif not rolled_out(kind, summary):
            pending.append(f"{kind} {name}: {summary['ready']}/{summary['replicas']} ready")
            progressing = summary["conditions"].get("Progressing")
            if progressing and progressing[0] == "False" and progressing[1] == "ProgressDeadlineExceeded":
                failing.append(f"{kind} {name}: {progressing[2] or 'progress deadline exceeded'}")
    if not pending and not failing:
        return Verdict(State.READY)

    warnings_early: list[str] = []
    for rs_name, rs in sorted(objects.replicasets.items()):
        failure = rs["conditions"].get("ReplicaFailure")
        if rs["owner"] in wanted and failure and failure[0] == "True":
            (warnings_early if _namespace_still_starting(failure[2]) else failing).append(
                f"ReplicaSet {rs_name}: {failure[2] or failure[1]}")
    containers: dict[tuple[str, str], list[str]] = {}  # (container, reason) -> what each pod says, pod first
    logs: list[LogSource] = []
    for pod_name, pod in sorted(objects.pods.items()):
        if pod["deleting"] or not _owned_by(objects, pod["owner"], wanted):
            continue
        if pod["unschedulable"]:
            room = any(s in pod["unschedulable"] for s in ("Insufficient", "Too many pods"))
            failing.append(("the cluster has no room: " if room else f"pod {pod_name} cannot be scheduled: ")
                           + pod["unschedulable"])
        waiting = {container: (reason, message) for container, reason, message in pod["waiting"]}
        for container, count, exit_code, _reason in pod.get("restarts", []):
            reason, message = waiting.pop(container, ("CrashLoopBackOff", ""))
            if reason not in FAILING_WAIT_REASONS:
                continue
            line = f"pod {pod_name} container {container} keeps crashing: exit code {exit_code}, " \
                   f"restarted {count} time{'s' if count != 1 else ''}"
            containers.setdefault((container, "crashing"), []).append(line + (f"; {reason}: {message}" if message
                                                                              else ""))
            logs.append(LogSource(pod_name, container, True, exit_code))
        for container, reason, message in ((c, r, m) for c, (r, m) in waiting.items()):
            if reason in FAILING_WAIT_REASONS:
                detail = f": {message}" if message else ""
                containers.setdefault((container, reason), []).append(
                    f"pod {pod_name} container {container} is {reason}{detail}")
        for container, exit_code, _reason in pod.get("exited", []):
            if pod["phase"] == "Failed" or pod["owner"][0] == "Job":
                logs.append(LogSource(pod_name, container, False, exit_code))
    # One line per container and reason, whichever pod says it first: replicas fail alike.
    for lines in containers.values():
        more = len(lines) - 1
        failing.append(lines[0] + (f" (and {more} more pod{'s' if more > 1 else ''})" if more else ""))
    warnings: list[str] = []
    for event in reversed(objects.events.values()):
        kind, name = event["object"]
        ours = (kind, name) in wanted or (kind == "ReplicaSet" and objects.replicasets.get(name, {}).get("owner")
                                          in wanted) or (kind == "Pod" and name in objects.pods)
        if not ours:
            continue
        line = f"{kind} {name}: {event['reason']}: {event['message']}"
        # Events are history, not state: a FailedCreate counts only while the workload still lacks the
        # pods it could not create. (A ReplicaSet says so in its ReplicaFailure condition, read above.)
        (failing if event["reason"] == "FailedCreate" and _still_missing_pods(kind, name, objects)
         and not _namespace_still_starting(event["message"]) else warnings).append(line)
    warnings = warnings_early + warnings
    if failing:
        return Verdict(State.FAILING, pending, _dedupe(failing + _news(warnings, failing)), logs[:MAX_LOG_SOURCES])
    return Verdict(State.PROGRESSING, pending, _dedupe(warnings))


def _news(warnings: list[str], failing: list[str]) -> list[str]:
    """The events that say something the failing reasons do not (kubelet repeats its container states as
    events, once per pod and attempt), at most MAX_EXTRA_EVENTS."""
    said = " ".join(failing)
    fresh = []
    for line in warnings:
        message = line.split(": ", 2)[-1].removeprefix("Error: ")
        if message not in said and message not in fresh:
            fresh.append(line)
    return fresh[:MAX_EXTRA_EVENTS]


def _bounded(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"


def failure_message(verdict: Verdict, grace: float) -> str:
    """The status message of a rollout that kept failing for `grace` seconds."""
    return _bounded(f"Not becoming ready ({'; '.join(verdict.pending) or 'failing'}): "
                    + "; ".join(verdict.reasons) + f" (still failing after {int(grace)}s)")


def timeout_message(verdict: Verdict, timeout: float) -> str:
    """The status message of a rollout that did not finish within the timeout."""
    message = f"not ready after {int(timeout)}s: " + ("; ".join(verdict.pending) or "still rolling out")
    if verdict.reasons:
        message += ". " + "; ".join(verdict.reasons)
    return _bounded(message)


MAX_LOG_TAIL_LINES = 20
MAX_LOG_TAIL_CHARS = 1500
_CONTROL = str.maketrans({c: None for c in range(32) if c not in (9, 10)} | {127: None})


def log_tail(text: str) -> str:
    """The end of a container's log as it may be shown anywhere: terminal escapes and other control
    characters removed, at most MAX_LOG_TAIL_LINES lines and MAX_LOG_TAIL_CHARS characters."""
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    lines = [line.replace("\x1b", "").translate(_CONTROL) for line in lines]
    while lines and not lines[-1]:
        lines.pop()
    tail = "\n".join(lines[-MAX_LOG_TAIL_LINES:])
    return tail if len(tail) <= MAX_LOG_TAIL_CHARS else "…" + tail[-(MAX_LOG_TAIL_CHARS - 1):]


def with_logs(message: str, tails: list[tuple[LogSource, str]]) -> str:
    """A failure message followed by the last lines of the containers that explain it, each named."""
    sections = [message]
    for source, text in tails:
        run = "its last run" if source.previous else "its run"
        exit_note = f", exit code {source.exit_code}" if source.exit_code else ""
        body = log_tail(text) or "(the log is empty)"
        sections.append(f"Last lines of pod {source.pod} container {source.container} ({run}{exit_note}):\n{body}")
    return "\n\n".join(sections)
