"""Applying a preview's objects with server-side apply, in waves, and pruning what left its manifests."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping

from previews.gateways import errors
from previews.gateways.kube.client import REQUEST_TIMEOUT, call, map_concurrently, resource_for
from previews.gateways.kube.errors import KindNotServed
from previews.manifests.labels import FIELD_MANAGER, WORKLOAD_KINDS

# Kinds whose controllers create pods: applied after everything else of the same call, so the
# ConfigMaps, Secrets, ServiceAccounts and claims their pods use exist before the first pod does.
POD_CREATING_KINDS = frozenset(("Deployment", "StatefulSet", "Job", "CronJob"))


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
        calls = [(obj, resource_for(obj["apiVersion"], obj["kind"])) for obj in wave]
        results = map_concurrently(_apply_one, calls)
        for (obj, _), generation in zip(calls, results, strict=True):
            if obj["kind"] in track:
                workloads[f"{obj['kind']}/{obj['metadata']['name']}"] = generation
    return workloads


def _apply_one(item: tuple[dict, object]) -> int:
    """Apply one object; its metadata.generation after the apply."""
    obj, resource = item
    meta = obj["metadata"]
    # The response is read as plain JSON: the dynamic client would wrap every field of it (managedFields
    # included) in objects of its own, for one number.
    response = call(f"apply {obj['kind']} {meta['namespace']}/{meta['name']}", resource.server_side_apply,
                    body=obj, name=meta["name"], namespace=meta["namespace"], field_manager=FIELD_MANAGER,
                    force_conflicts=True, serialize=False, _request_timeout=REQUEST_TIMEOUT)
    return int(json.loads(response.data).get("metadata", {}).get("generation") or 0)


def prune(namespace: str, label_selector: str, keep: set[tuple[str, str, str]],
          kinds: Mapping[str, tuple[str, ...]]) -> list[str]:
    """Delete objects of `kinds` (kind -> its apiVersions; the first is listed) that carry our labels but were
    not rendered this time.

    A kind the cluster does not serve (the Gateway API's, without its CRDs) has nothing to prune.
    """
    deleted = []
    for kind, versions in kinds.items():
        api_version = versions[0]
        try:
            resource = resource_for(api_version, kind)
        except KindNotServed:
            continue
        items = call(f"list {kind} in {namespace}", resource.get, namespace=namespace,
                     label_selector=label_selector, _request_timeout=REQUEST_TIMEOUT).items
        for item in items:
            name = item.metadata.name
            if (api_version, kind, name) in keep:
                continue
            with contextlib.suppress(errors.NotFound):
                call(f"delete {kind} {namespace}/{name}", resource.delete, name=name, namespace=namespace,
                     body={"propagationPolicy": "Background"}, _request_timeout=REQUEST_TIMEOUT)
            deleted.append(f"{kind}/{name}")
    return deleted
