"""A property-based fuzzer over `render_bundle`: valid bundles, mutated structurally, are either rendered or
refused with ManifestError, never anything else (a 500 at the PUT, a crashed deploy).

Mutations, at any depth of any object: a value replaced by a list holding it, by a mapping holding it, by a
scalar of another type, by a huge or negative number, by a long string; a mapping's key removed; a value nested
deeper (within the depth limit); a value moved to another place. The example count is bounded so the run takes
seconds in CI (PREVIEWS_FUZZ_EXAMPLES raises it for a longer hunt).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from previews import manifests as m
from tests.manifest_bundles import CTX, LIMIT

GATEWAY_CTX = m.RenderContext(**{**CTX.__dict__, "routing": "gateway"})
SAMPLE = list(yaml.safe_load_all((Path(__file__).resolve().parent.parent / "previews" / "samples" /
                                  "shop.yaml").read_text()))
POD = {
    "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
    "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 1, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname",
                                          "labelSelector": {"matchLabels": {"app": "web"}}}}]}},
    "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                                   "whenUnsatisfiable": "ScheduleAnyway",
                                   "labelSelector": {"matchLabels": {"app": "web"}}}],
    "volumes": [{"name": "cfg", "configMap": {"name": "shop-config"}}, {"name": "tmp", "emptyDir": {}},
                {"name": "tok", "projected": {"sources": [{"serviceAccountToken": {"path": "t",
                                                                                   "expirationSeconds": 3600}}]}},
                {"name": "eph", "ephemeral": {"volumeClaimTemplate": {"spec": {
                    "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}}}],
    "initContainers": [{"name": "init", "image": "busybox:1.36", "command": ["true"]}],
    "containers": [{
        "name": "web", "image": "localhost/previews-sample:dev", "imagePullPolicy": "Always",
        "ports": [{"name": "http", "containerPort": 8080}],
        "env": [{"name": "A", "value": "b"}],
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}},
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"],
                                                                                "add": ["NET_BIND_SERVICE"]}},
        "readinessProbe": {"httpGet": {"path": "/", "port": "http"}},
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", "1"]}}},
        "volumeMounts": [{"name": "cfg", "mountPath": "/cfg", "readOnly": True}],
    }],
}
TEMPLATE = {"metadata": {"labels": {"app": "web"}, "annotations": {"kubectl.kubernetes.io/default-container": "web"}},
            "spec": POD}
OBJECTS = [
    {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "labels": {"app": "web"}},
     "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}}, "template": TEMPLATE}},
    {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"},
     "spec": {"serviceName": "db", "selector": {"matchLabels": {"app": "db"}}, "template": TEMPLATE,
              "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {
                  "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}},
    {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "nightly"},
     "spec": {"schedule": "0 3 * * *", "successfulJobsHistoryLimit": 1, "failedJobsHistoryLimit": 1,
              "jobTemplate": {"spec": {"backoffLimit": 1, "ttlSecondsAfterFinished": 600, "template": {
                  "spec": {**POD, "restartPolicy": "Never"}}}}}},
    {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "migrate"},
     "spec": {"backoffLimit": 2, "ttlSecondsAfterFinished": 600, "template": {
         "spec": {**POD, "restartPolicy": "Never"}}}},
    {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "clone"},
     "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}},
              "dataSource": {"kind": "PersistentVolumeClaim", "name": "data"}}},
    {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "web"},
     "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "web"}},
              "unhealthyPodEvictionPolicy": "AlwaysAllow"}},
    {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "web"},
     "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
              "minReplicas": 1, "maxReplicas": 3}},
    {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"}, "type": "Opaque",
     "stringData": {"password": "x"}},
    {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "app"}, "automountServiceAccountToken": False},
    {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
     "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}},
]
INGRESS = {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "web", "annotations": {
    "nginx.ingress.kubernetes.io/proxy-body-size": "8m"}},
    "spec": {"tls": [{"hosts": ["PREVIEW_HOST"], "secretName": "tls"}], "rules": [{"host": "PREVIEW_HOST", "http": {
        "paths": [{"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {
            "number": 80}}}}]}}]}}
ROUTE = {"apiVersion": m.GATEWAY_API_VERSION, "kind": "HTTPRoute", "metadata": {"name": "web"}, "spec": {
    "parentRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "namespace": "gateway-system",
                    "name": "previews"}],
    "hostnames": ["PREVIEW_HOST"],
    "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/api"}, "headers": [
        {"name": "x-a", "value": "b"}], "method": "GET"}],
               "filters": [{"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": [
                   {"name": "x-b", "value": "c"}], "remove": ["x-c"]}},
                   {"type": "URLRewrite", "urlRewrite": {"hostname": "PREVIEW_HOST", "path": {
                       "type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}}}],
               "backendRefs": [{"name": "web", "port": 80, "filters": [{"type": "RequestMirror", "requestMirror": {
                   "backendRef": {"name": "web", "port": 80}}}]}],
               "timeouts": {"request": "10s"}}]}}
BUNDLES = [(SAMPLE, CTX), ([*OBJECTS, INGRESS], CTX), ([*OBJECTS, ROUTE], GATEWAY_CTX)]
EXAMPLES = int(os.environ.get("PREVIEWS_FUZZ_EXAMPLES", "200"))


def test_the_seed_bundles_are_valid():
    """The fuzzer starts from accepted bundles, so that its mutations reach deep into the checks."""
    for objects, ctx in BUNDLES:
        m.render_bundle(yaml.safe_dump_all(objects), ctx, LIMIT)


def _places(value, path=()):
    """Every (container, key) in a tree of mappings and lists."""
    if isinstance(value, dict):
        for key, child in value.items():
            yield value, key
            yield from _places(child, (*path, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield value, index
            yield from _places(child, (*path, index))


SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(10**30), max_value=10**30),
    st.sampled_from([0, -1, 2**63, 2**64, 10**4000, -(10**4000), 1.5, 1e308, "", "x" * 5000, "1e9999", "99999999Ei",
                     "PREVIEW_HOST", "ALL", "Always", "IfNotPresent", "default", "kube-system", "*"]),
    st.text(max_size=20),
)


def _mutate(draw, objects: list) -> None:
    places = [(None, index) for index in range(len(objects))]
    for obj in objects:
        places.extend(_places(obj))
    container, key = draw(st.sampled_from(places))
    target = objects if container is None else container
    current = target[key]
    how = draw(st.sampled_from(["list", "dict", "scalar", "delete", "nest", "move", "empty"]))
    if how == "list":
        target[key] = [current]
    elif how == "dict":
        target[key] = {draw(st.sampled_from(["x", "name", "type", "value"])): current}
    elif how == "scalar":
        target[key] = draw(SCALARS)
    elif how == "delete" and isinstance(target, dict):
        del target[key]
    elif how == "nest":
        wrapped = current
        for _ in range(draw(st.integers(min_value=1, max_value=20))):
            wrapped = draw(st.sampled_from([[wrapped], {"a": wrapped}]))
        target[key] = wrapped
    elif how == "move":
        other_container, other_key = draw(st.sampled_from(places))
        other = objects if other_container is None else other_container
        target[key] = copy.deepcopy(other[other_key])
    elif how == "empty":
        target[key] = draw(st.sampled_from([{}, [], "", None]))


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_no_mutated_bundle_raises_anything_but_a_manifest_error(data):
    seed, ctx = data.draw(st.sampled_from(BUNDLES))
    objects = copy.deepcopy(seed)
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        _mutate(data.draw, objects)
    try:
        text = yaml.safe_dump_all(objects)
    except (ValueError, RecursionError):  # a mutation PyYAML cannot write (an object holding itself)
        return
    try:
        rendered = m.render_bundle(text, ctx, LIMIT)
    except m.ManifestError as exc:
        assert exc.problems, "a ManifestError names at least one problem"
        return
    # What is accepted can be written back as YAML (it is sent to the API server as JSON).
    yaml.safe_dump_all(rendered)
