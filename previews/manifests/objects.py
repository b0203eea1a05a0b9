"""Reading objects of any shape: mappings and lists or nothing, pod templates, pod specs, containers."""

from __future__ import annotations

from collections.abc import Iterable, Iterator


def as_dict(value: object) -> dict:
    return value if isinstance(value, dict) else {}


def as_list(value: object) -> list:
    return value if isinstance(value, list) else []


def is_empty(value: object) -> bool:
    return value is None or value == {} or value == [] or value == "" or value is False


def pod_templates(kind: str, obj: dict) -> Iterator[tuple[str, dict]]:
    spec = as_dict(obj.get("spec"))
    if kind in ("Deployment", "StatefulSet", "Job"):
        yield "spec.template", as_dict(spec.get("template"))
    elif kind == "CronJob":
        job_spec = as_dict(as_dict(spec.get("jobTemplate")).get("spec"))
        yield "spec.jobTemplate.spec.template", as_dict(job_spec.get("template"))


def pod_specs(kind: str, obj: dict) -> Iterator[tuple[str, dict]]:
    for path, template in pod_templates(kind, obj):
        yield f"{path}.spec", as_dict(template.get("spec"))


def containers(pod_spec: dict) -> Iterator[tuple[str, dict]]:
    for group in ("initContainers", "containers", "ephemeralContainers"):
        for j, container in enumerate(as_list(pod_spec.get(group))):
            if isinstance(container, dict):
                yield f"{group}[{j}]", container


def object_keys(objects: Iterable[dict]) -> set[tuple[str, str, str]]:
    """(apiVersion, kind, name) of each object: what a later prune keeps."""
    return {(o["apiVersion"], o["kind"], o["metadata"]["name"]) for o in objects}
