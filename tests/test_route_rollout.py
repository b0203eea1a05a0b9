"""Readiness of a gateway-routed preview: the route's status for our Gateway, decided purely (no cluster)."""

from __future__ import annotations

import pytest

from previews.engine import rollout
from previews.engine.rollout import NamespaceObjects, State
from previews.engine.watcher import ClusterCache
from previews.manifests import GatewayRef
from tests.test_rollout import NS, deployment, objects

GATEWAY = GatewayRef("gateway-system", "previews")
OURS = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "namespace": "gateway-system", "name": "previews"}
EXPECTED = {"Deployment/web": 2, "HTTPRoute/preview": 3}


def condition(kind: str, status: str, generation: int = 3, reason: str = "", message: str = "") -> dict:
    return {"type": kind, "status": status, "observedGeneration": generation,
            "reason": reason or ("Accepted" if kind == "Accepted" else "ResolvedRefs"), "message": message,
            "lastTransitionTime": "2026-11-27T00:00:00Z"}


def route(*parents: tuple[dict, list[dict]], generation: int = 3) -> dict:
    return {"metadata": {"name": "preview", "namespace": NS, "generation": generation},
            "spec": {"parentRefs": [OURS], "hostnames": ["pr-1.example.com"]},
            "status": {"parents": [{"parentRef": ref, "controllerName": "example.com/gateway", "conditions": conds}
                                   for ref, conds in parents]}}


ACCEPTED = [condition("Accepted", "True"), condition("ResolvedRefs", "True")]

# (name, the route as the watcher saw it (None: not at all), state, what the verdict says)
CASES = [
    ("not seen yet", None, State.PROGRESSING, "HTTPRoute preview: not seen yet"),
    ("seen before our apply (an older generation)", route((OURS, ACCEPTED), generation=2), State.PROGRESSING,
     "HTTPRoute preview: not seen yet"),
    ("no status yet", route(), State.PROGRESSING, "waiting for Gateway gateway-system/previews to accept it"),
    ("accepted and resolved", route((OURS, ACCEPTED)), State.READY, ""),
    ("accepted at a later generation", route((OURS, [condition("Accepted", "True", 4),
                                                     condition("ResolvedRefs", "True", 4)]), generation=4),
     State.READY, ""),
    ("parent written without the defaults", route(({"name": "previews", "namespace": "gateway-system"}, ACCEPTED)),
     State.READY, ""),
    ("accepted for the previous generation only", route((OURS, [condition("Accepted", "True", 2),
                                                                condition("ResolvedRefs", "True", 2)])),
     State.PROGRESSING, "waiting for Gateway"),
    ("accepted, references not resolved yet (Unknown)", route((OURS, [condition("Accepted", "True"),
                                                                      condition("ResolvedRefs", "Unknown")])),
     State.PROGRESSING, "waiting for Gateway"),
    ("accepted by another Gateway only", route(({**OURS, "name": "public"}, ACCEPTED)), State.PROGRESSING,
     "waiting for Gateway"),
    ("accepted by our Gateway on another listener only", route(({**OURS, "sectionName": "admin"}, ACCEPTED)),
     State.PROGRESSING, "waiting for Gateway"),
    ("not accepted", route((OURS, [condition("Accepted", "False", reason="NotAllowedByListeners",
                                             message="no listener admits routes from namespace pr-1")])),
     State.FAILING, "HTTPRoute preview was refused by Gateway gateway-system/previews: Accepted: "
                    "NotAllowedByListeners: no listener admits routes from namespace pr-1"),
    ("a backend that does not resolve", route((OURS, [condition("Accepted", "True"), condition(
        "ResolvedRefs", "False", reason="BackendNotFound", message="service pr-1/web not found")])),
     State.FAILING, "ResolvedRefs: BackendNotFound: service pr-1/web not found"),
    ("refused for the previous generation only", route((OURS, [condition("Accepted", "False", 2),
                                                               condition("ResolvedRefs", "True", 2)])),
     State.PROGRESSING, "waiting for Gateway"),
    ("refused by another Gateway, accepted by ours", route(({**OURS, "name": "public"}, [
        condition("Accepted", "False", reason="NotAllowedByListeners")]), (OURS, ACCEPTED)), State.READY, ""),
]


@pytest.mark.parametrize("seen,state,says", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_routes_status_for_our_gateway_decides_its_part_of_the_rollout(seen, state, says):
    items = [("Deployment", deployment())] + ([("HTTPRoute", seen)] if seen else [])
    verdict = rollout.assess(EXPECTED, objects(*items), GATEWAY)
    assert verdict.state == state, verdict
    if says:
        assert any(says in line for line in verdict.pending + verdict.reasons), verdict


def test_a_route_waits_for_the_workloads_too():
    verdict = rollout.assess(EXPECTED, objects(("Deployment", deployment(ready=0, available=0)),
                                               ("HTTPRoute", route((OURS, ACCEPTED)))), GATEWAY)
    assert verdict.state == State.PROGRESSING
    assert verdict.pending == ["Deployment web: 0/2 ready"]


def test_a_listener_of_ours_is_judged_when_one_is_configured():
    https = GatewayRef("gateway-system", "previews", "https")
    seen = objects(("HTTPRoute", route(({**OURS, "sectionName": "https"}, ACCEPTED))))
    assert rollout.assess({"HTTPRoute/preview": 3}, seen, https).state == State.READY
    assert rollout.assess({"HTTPRoute/preview": 3}, seen, GATEWAY).state == State.PROGRESSING


def test_without_routes_in_the_rollout_their_status_is_not_waited_for():
    assert rollout.assess({"Deployment/web": 2}, objects(("Deployment", deployment()), ("HTTPRoute", route())),
                          GATEWAY).state == State.READY


@pytest.mark.parametrize("status", [{"parents": "x"}, {"parents": [{"conditions": [{"observedGeneration": "3"}]}]}])
def test_a_malformed_route_status_is_refused(status):
    with pytest.raises(rollout.Malformed):
        rollout.summarize("HTTPRoute", {**route(), "status": status})


def test_the_cache_keeps_routes_and_a_fresh_list_replaces_them():
    cache = ClusterCache()
    cache.apply("Namespace", "ADDED", {"metadata": {"name": NS}})
    assert cache.apply("HTTPRoute", "ADDED", route((OURS, ACCEPTED))) == (NS, False)
    assert set(cache.objects[NS].routes) == {("HTTPRoute", "preview")}
    touched, gone = cache.replace("HTTPRoute", [])  # e.g. the CRD is absent: listed, empty
    assert touched == {NS} and not gone
    assert cache.objects[NS].routes == {}
    cache.apply("HTTPRoute", "ADDED", route())
    cache.apply("HTTPRoute", "DELETED", route())
    assert cache.objects[NS].routes == {}


def test_namespace_objects_forget_routes_by_kind():
    seen = NamespaceObjects()
    _ns, name, summary = rollout.summarize("HTTPRoute", route())
    seen.put("HTTPRoute", name, summary)
    assert seen.forget_kind("HTTPRoute") and not seen.routes
