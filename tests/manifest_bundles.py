"""Bundles and contexts the manifest tests share: a preview's render context, object builders, and how a
refusal is asserted."""

from pathlib import Path

import pytest
import yaml

from previews import manifests as m

SAMPLE = (Path(__file__).resolve().parent.parent / "previews" / "samples" / "shop.yaml").read_text()
HOST = "pr-42.preview.example.com"
CTX = m.RenderContext(
    namespace="pr-42", host=HOST, labels={m.MANAGED_BY_LABEL: m.MANAGED_BY_VALUE, m.PR_LABEL: "42"},
    images={"localhost/previews-sample": "localhost/previews-sample:pr-42-abc1234"},
)
LIMIT = 1_048_576


def deployment(pod_spec_extra=None, container_extra=None, name="web", image="localhost/previews-sample:staging", **top):
    container = {"name": "c", "image": image, **(container_extra or {})}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, **top.pop("metadata", {})},
        "spec": {"selector": {"matchLabels": {"app": name}}, "template": {
            "metadata": {"labels": {"app": name}},
            "spec": {"containers": [container], **(pod_spec_extra or {})}}},
        **top,
    }


def dump(*objects) -> str:
    return yaml.safe_dump_all(objects)


def problems_of(text: str) -> list[str]:
    with pytest.raises(m.ManifestError) as info:
        m.render_bundle(text, CTX, LIMIT)
    return [str(p) for p in info.value.problems]


POD = "spec.template.spec"
C0 = f"{POD}.containers[0]"


def pod(**pod_spec_extra) -> dict:
    return deployment(pod_spec_extra=pod_spec_extra)


def container(**extra) -> dict:
    return deployment(container_extra=extra)


def volume(**source) -> dict:
    return pod(volumes=[{"name": "v", **source}])


def ingress(annotations=None, **spec) -> dict:
    backend = {"service": {"name": "web", "port": {"number": 80}}}
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": "i", **({"annotations": annotations} if annotations else {})},
            "spec": {"rules": [{"host": "PREVIEW_HOST", "http": {"paths": [
                {"path": "/", "pathType": "Prefix", "backend": backend}]}}], **spec}}


def pvc(**spec) -> dict:
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}, **spec}}


def pdb(**spec) -> dict:
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "b"}, "spec": spec}


def service(**spec) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}], **spec}}


CONFIG = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ok"}}


def refused_at(text: str, document: int, path: str, fragment: str, ctx: m.RenderContext = CTX) -> None:
    with pytest.raises(m.ManifestError) as info:
        m.render_bundle(text, ctx, LIMIT)
    problems = info.value.problems
    assert any(p.document == document - 1 and p.path == path and fragment in p.message for p in problems), \
        [str(p) for p in problems]
