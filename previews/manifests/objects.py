"""Reading objects of any shape: mappings and lists or nothing, pod templates, pod specs, containers."""

from __future__ import annotations

from collections.abc import Iterable, Iterator


def _dict(value) -> dict:
    return value if isinstance(value, dict) else {}


def _list(value) -> list:
    return value if isinstance(value, list) else []


def _empty(value) -> bool:
    return value is None or value == {} or value == [] or value == "" or value is False



def _pod_templates(kind: str, obj: dict) -> Iterator[tuple[str, dict]]:
    spec = _dict(obj.get("spec"))
    if kind in ("Deployment", "StatefulSet", "Job"):
        yield "spec.template", _dict(spec.get("template"))
    elif kind == "CronJob":
        job_spec = _dict(_dict(spec.get("jobTemplate")).get("spec"))
        yield "spec.jobTemplate.spec.template", _dict(job_spec.get("template"))


def _pod_specs(kind: str, obj: dict) -> Iterator[tuple[str, dict]]:
    for path, template in _pod_templates(kind, obj):
        yield f"{path}.spec", _dict(template.get("spec"))


def _containers(pod_spec: dict) -> Iterator[tuple[str, dict]]:
    for group in ("initContainers", "containers", "ephemeralContainers"):
        for j, container in enumerate(_list(pod_spec.get(group))):
            if isinstance(container, dict):
                yield f"{group}[{j}]", container



def object_keys(objects: Iterable[dict]) -> set[tuple[str, str, str]]:
    """(apiVersion, kind, name) of each object: what a later prune keeps."""
    return {(o["apiVersion"], o["kind"], o["metadata"]["name"]) for o in objects}
