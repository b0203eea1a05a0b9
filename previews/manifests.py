"""Rendering and validating a preview's Kubernetes objects. Pure functions, no I/O.

A bundle (a repository's template, or the manifests CI sent) is parsed as plain
YAML data, checked against the policy below as a whole, and only then rendered
for one preview: namespace set, our labels added, images overridden the way
kustomize's `images:` does, and the Ingress generated or its placeholder host
filled in. Nothing is applied unless every document passes.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import yaml

from previews.validators import IMAGE_RE

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "pr-previews"
REPOSITORY_LABEL = "previews.dev/repository-id"
PR_LABEL = "previews.dev/pr"
FIELD_MANAGER = "pr-previews"
# Write this as an Ingress host in a template; it becomes the preview's own host.
HOST_PLACEHOLDER = "PREVIEW_HOST"
GENERATED_INGRESS_NAME = "preview"

# kind -> the apiVersions we accept for it. Everything else is refused.
ALLOWED_KINDS: dict[str, tuple[str, ...]] = {
    "Deployment": ("apps/v1",),
    "StatefulSet": ("apps/v1",),
    "Service": ("v1",),
    "ConfigMap": ("v1",),
    "Secret": ("v1",),
    "Ingress": ("networking.k8s.io/v1",),
    "Job": ("batch/v1",),
    "CronJob": ("batch/v1",),
    "PersistentVolumeClaim": ("v1",),
    "HorizontalPodAutoscaler": ("autoscaling/v2",),
    "PodDisruptionBudget": ("policy/v1",),
    "ServiceAccount": ("v1",),
}
# Kinds a bundle may not carry because the service itself owns them, or because
# they reach beyond the namespace; named so the error can say why.
RESERVED_KINDS = {
    "Namespace": "the service creates the namespace itself",
    "NetworkPolicy": "the service applies the namespace's network policy itself",
    "ResourceQuota": "the service applies the namespace's quota itself",
    "LimitRange": "the service applies the namespace's limit range itself",
    "Role": "RBAC objects are not allowed in previews",
    "RoleBinding": "RBAC objects are not allowed in previews",
    "ClusterRole": "cluster-scoped kinds are not allowed",
    "ClusterRoleBinding": "cluster-scoped kinds are not allowed",
    "CustomResourceDefinition": "cluster-scoped kinds are not allowed",
    "PersistentVolume": "cluster-scoped kinds are not allowed",
    "StorageClass": "cluster-scoped kinds are not allowed",
    "PriorityClass": "cluster-scoped kinds are not allowed",
    "ValidatingWebhookConfiguration": "cluster-scoped kinds are not allowed",
    "MutatingWebhookConfiguration": "cluster-scoped kinds are not allowed",
    "Pod": "bare Pods are not allowed; use a Deployment, StatefulSet or Job",
}
REFUSED_SERVICE_TYPES = ("LoadBalancer", "NodePort", "ExternalName")
REFUSED_ANNOTATION_RE = re.compile(
    r"^nginx\.ingress\.kubernetes\.io/(.*-snippet|auth-url|auth-signin|auth-snippet)$"
)
DNS_SUBDOMAIN_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


@dataclass(frozen=True)
class Problem:
    document: int  # 0-based index of the document in the bundle
    path: str  # field path inside that document, e.g. spec.template.spec.containers[0].image
    message: str

    def __str__(self) -> str:
        where = f"document {self.document + 1}" + (f", {self.path}" if self.path else "")
        return f"{where}: {self.message}"


class ManifestError(Exception):
    """The bundle broke the policy. Carries every problem found, not just the first."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems))


@dataclass(frozen=True)
class RenderContext:
    namespace: str
    host: str
    labels: dict[str, str]
    images: dict[str, str] = field(default_factory=dict)  # image name -> full reference
    service_name: str = "web"
    service_port: int = 80
    tls_secret_name: str = ""
    ingress_class: str = ""


# --- parsing ------------------------------------------------------------------------


class _PlainDataLoader(yaml.SafeLoader):
    """SafeLoader that also refuses aliases (billion-laughs style size blow-ups)."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.constructor.ConstructorError(
                None, None, "YAML aliases (*name) are not allowed; write the data out", event.start_mark
            )
        return super().compose_node(parent, index)


def parse_bundle(text: str, max_bytes: int) -> list[dict]:
    """Parse multi-document YAML into a list of objects, expanding `kind: List`.

    Raises ManifestError when the text is too large, is not plain YAML data, or
    holds something other than objects.
    """
    size = len(text.encode())
    if size > max_bytes:
        raise ManifestError([Problem(0, "", f"the bundle is {size} bytes; the limit is {max_bytes}")])
    documents: list = []
    loader = _PlainDataLoader(text)
    index = 0
    try:
        while loader.check_data():
            documents.append(loader.get_data())
            index += 1
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        reason = getattr(exc, "problem", None) or str(exc)
        raise ManifestError([Problem(index, "", f"not plain YAML data{where}: {reason}")]) from None
    finally:
        loader.dispose()

    objects: list[dict] = []
    problems: list[Problem] = []
    for i, doc in enumerate(documents):
        if doc is None:
            continue
        if not isinstance(doc, dict):
            problems.append(Problem(i, "", f"expected an object (a mapping), got {type(doc).__name__}"))
            continue
        if doc.get("kind") == "List":
            items = doc.get("items")
            if not isinstance(items, list):
                problems.append(Problem(i, "items", "a List needs a list of items"))
                continue
            for j, item in enumerate(items):
                if not isinstance(item, dict):
                    problems.append(Problem(i, f"items[{j}]", "expected an object (a mapping)"))
                else:
                    objects.append(item)
            continue
        objects.append(doc)
    if problems:
        raise ManifestError(problems)
    if not objects:
        raise ManifestError([Problem(0, "", "the bundle holds no objects")])
    return objects


# --- validation ---------------------------------------------------------------------


def validate(objects: list[dict], ctx: RenderContext) -> list[Problem]:
    """Every policy problem in the bundle, in document order."""
    problems: list[Problem] = []
    seen: dict[tuple[str, str], int] = {}
    for i, obj in enumerate(objects):
        problems.extend(_validate_object(i, obj, ctx))
        key = (str(obj.get("kind")), str((obj.get("metadata") or {}).get("name")))
        if key in seen:
            problems.append(Problem(i, "metadata.name", f"{key[0]} {key[1]!r} appears twice (first in document "
                                                        f"{seen[key] + 1})"))
        seen.setdefault(key, i)
    return problems


def _validate_object(i: int, obj: dict, ctx: RenderContext) -> Iterator[Problem]:
    kind, api_version = obj.get("kind"), obj.get("apiVersion")
    if not isinstance(kind, str) or not kind:
        yield Problem(i, "kind", "every object needs a kind")
        return
    if kind in RESERVED_KINDS:
        yield Problem(i, "kind", f"{kind} is not allowed: {RESERVED_KINDS[kind]}")
        return
    if kind not in ALLOWED_KINDS:
        allowed = ", ".join(sorted(ALLOWED_KINDS))
        yield Problem(i, "kind", f"{kind} is not allowed; allowed kinds: {allowed}")
        return
    if api_version not in ALLOWED_KINDS[kind]:
        yield Problem(i, "apiVersion", f"{kind} must use apiVersion {' or '.join(ALLOWED_KINDS[kind])}, "
                                       f"not {api_version!r}")
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict):
        yield Problem(i, "metadata", "every object needs metadata with a name")
        return
    name = metadata.get("name")
    if not isinstance(name, str) or len(name) > 253 or not DNS_SUBDOMAIN_RE.fullmatch(name):
        yield Problem(i, "metadata.name", f"{name!r} is not a valid object name (lower-case DNS subdomain)")
    namespace = metadata.get("namespace")
    if namespace not in (None, "", ctx.namespace):
        yield Problem(i, "metadata.namespace", f"objects must stay in the preview's namespace; "
                                               f"{namespace!r} is another namespace")
    for key in _dict(metadata.get("annotations")):
        if REFUSED_ANNOTATION_RE.match(str(key)):
            yield Problem(i, f"metadata.annotations[{key}]", "ingress-nginx snippet and auth annotations are "
                                                              "not allowed")
    for path, pod_spec in _pod_specs(kind, obj):
        yield from _validate_pod_spec(i, path, pod_spec)
    if kind == "Service":
        yield from _validate_service(i, _dict(obj.get("spec")))
    if kind == "Ingress":
        yield from _validate_ingress(i, _dict(obj.get("spec")), ctx)


def _dict(value) -> dict:
    return value if isinstance(value, dict) else {}


def _list(value) -> list:
    return value if isinstance(value, list) else []


def _pod_specs(kind: str, obj: dict) -> Iterator[tuple[str, dict]]:
    spec = _dict(obj.get("spec"))
    if kind in ("Deployment", "StatefulSet", "Job"):
        yield "spec.template.spec", _dict(_dict(spec.get("template")).get("spec"))
    elif kind == "CronJob":
        job_spec = _dict(_dict(spec.get("jobTemplate")).get("spec"))
        yield "spec.jobTemplate.spec.template.spec", _dict(_dict(job_spec.get("template")).get("spec"))


def _pod_templates(kind: str, obj: dict) -> Iterator[dict]:
    spec = obj.get("spec")
    if kind == "CronJob":
        spec = _dict(_dict(spec).get("jobTemplate")).get("spec")
    elif kind not in ("Deployment", "StatefulSet", "Job"):
        return
    template = _dict(spec).get("template")
    if isinstance(template, dict):
        yield template


def _containers(pod_spec: dict) -> Iterator[tuple[str, dict]]:
    for group in ("initContainers", "containers", "ephemeralContainers"):
        for j, container in enumerate(_list(pod_spec.get(group))):
            if isinstance(container, dict):
                yield f"{group}[{j}]", container


def _validate_pod_spec(i: int, path: str, pod_spec: dict) -> Iterator[Problem]:
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if pod_spec.get(flag):
            yield Problem(i, f"{path}.{flag}", f"{flag} is not allowed")
    for j, volume in enumerate(_list(pod_spec.get("volumes"))):
        if isinstance(volume, dict) and "hostPath" in volume:
            yield Problem(i, f"{path}.volumes[{j}].hostPath", "hostPath volumes are not allowed")
    for cpath, container in _containers(pod_spec):
        security = _dict(container.get("securityContext"))
        if security.get("privileged"):
            yield Problem(i, f"{path}.{cpath}.securityContext.privileged", "privileged containers are not allowed")
        for k, port in enumerate(_list(container.get("ports"))):
            if isinstance(port, dict) and port.get("hostPort"):
                yield Problem(i, f"{path}.{cpath}.ports[{k}].hostPort", "hostPort is not allowed")
        image = container.get("image")
        if not isinstance(image, str) or not IMAGE_RE.fullmatch(image):
            yield Problem(i, f"{path}.{cpath}.image", f"{image!r} is not an image reference")


def _validate_service(i: int, spec: dict) -> Iterator[Problem]:
    service_type = spec.get("type", "ClusterIP")
    if service_type in REFUSED_SERVICE_TYPES:
        yield Problem(i, "spec.type", f"Services of type {service_type} are not allowed; use ClusterIP and the "
                                      "preview's Ingress")
    if spec.get("externalIPs"):
        yield Problem(i, "spec.externalIPs", "externalIPs are not allowed")


def _validate_ingress(i: int, spec: dict, ctx: RenderContext) -> Iterator[Problem]:
    allowed = (ctx.host, HOST_PLACEHOLDER)
    if "defaultBackend" in spec:
        yield Problem(i, "spec.defaultBackend", "a default backend would catch every host; route by the "
                                                "preview's host instead")
    rules = _list(spec.get("rules"))
    if not rules:
        yield Problem(i, "spec.rules", f"an Ingress needs a rule for host {ctx.host!r} (or {HOST_PLACEHOLDER})")
    for j, rule in enumerate(rules):
        host = _dict(rule).get("host")
        if host not in allowed:
            shown = "an empty host" if not host else repr(host)
            yield Problem(i, f"spec.rules[{j}].host", f"{shown} is not this preview's host {ctx.host!r} "
                                                      f"(write {HOST_PLACEHOLDER} to have it filled in)")
    for j, tls in enumerate(_list(spec.get("tls"))):
        for k, host in enumerate(_list(_dict(tls).get("hosts"))):
            if host not in allowed:
                yield Problem(i, f"spec.tls[{j}].hosts[{k}]", f"{host!r} is not this preview's host {ctx.host!r}")


# --- rendering -----------------------------------------------------------------------


def override_image(reference: str, images: dict[str, str]) -> str:
    """kustomize-style: if the reference's name (without tag/digest) is overridden, use the override."""
    match = IMAGE_RE.fullmatch(reference)
    if not match:
        return reference
    registry = match.group("registry")
    name = f"{registry}/{match.group('path')}" if registry else match.group("path")
    return images.get(name, reference)


def render(objects: list[dict], ctx: RenderContext) -> list[dict]:
    """The objects as they will be applied. Call `validate` first; this assumes a valid bundle."""
    rendered = []
    for original in objects:
        obj = copy.deepcopy(original)
        metadata = obj.setdefault("metadata", {})
        metadata["namespace"] = ctx.namespace
        metadata["labels"] = {**_dict(metadata.get("labels")), **ctx.labels}
        for _path, pod_spec in _pod_specs(obj["kind"], obj):
            for _cpath, container in _containers(pod_spec):
                container["image"] = override_image(container["image"], ctx.images)
        for template in _pod_templates(obj["kind"], obj):
            # Pods (and ReplicaSets, which copy these) carry our labels too, so the cluster watcher
            # can follow them with one label-selected watch instead of watching every pod.
            template_meta = template.setdefault("metadata", {})
            template_meta["labels"] = {**_dict(template_meta.get("labels")), **ctx.labels}
        if obj["kind"] == "Ingress":
            _fill_hosts(obj, ctx)
        rendered.append(obj)
    if not any(o["kind"] == "Ingress" for o in rendered):
        rendered.append(generated_ingress(ctx))
    return rendered


def _fill_hosts(ingress: dict, ctx: RenderContext) -> None:
    spec = ingress.get("spec") or {}
    for rule in _list(spec.get("rules")):
        if rule.get("host") == HOST_PLACEHOLDER:
            rule["host"] = ctx.host
    for tls in _list(spec.get("tls")):
        tls["hosts"] = [ctx.host if h == HOST_PLACEHOLDER else h for h in _list(tls.get("hosts"))]
    if ctx.ingress_class and not spec.get("ingressClassName"):
        spec["ingressClassName"] = ctx.ingress_class


def generated_ingress(ctx: RenderContext) -> dict:
    spec: dict = {
        "rules": [{
            "host": ctx.host,
            "http": {"paths": [{
                "path": "/",
                "pathType": "Prefix",
                "backend": {"service": {"name": ctx.service_name, "port": {"number": ctx.service_port}}},
            }]},
        }],
    }
    if ctx.tls_secret_name:
        spec["tls"] = [{"hosts": [ctx.host], "secretName": ctx.tls_secret_name}]
    if ctx.ingress_class:
        spec["ingressClassName"] = ctx.ingress_class
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": GENERATED_INGRESS_NAME, "namespace": ctx.namespace, "labels": dict(ctx.labels)},
        "spec": spec,
    }


def render_bundle(text: str, ctx: RenderContext, max_bytes: int) -> list[dict]:
    """Parse, validate as a whole, then render. Raises ManifestError listing every problem."""
    objects = parse_bundle(text, max_bytes)
    problems = validate(objects, ctx)
    if problems:
        raise ManifestError(problems)
    return render(objects, ctx)


# --- the namespace's own guardrails ---------------------------------------------------


@dataclass(frozen=True)
class Guardrails:
    quota_cpu: str
    quota_memory: str
    quota_pods: int
    ingress_namespace: str
    # (CIDR, TCP port) of the shared Postgres server holding the preview's data, which pods may reach.
    data_egress: tuple[str, int] | None = None


def guardrail_objects(ctx: RenderContext, g: Guardrails) -> list[dict]:
    """ResourceQuota, LimitRange and a default-deny NetworkPolicy for one preview namespace."""
    meta = {"namespace": ctx.namespace, "labels": dict(ctx.labels)}
    egress: list[dict] = [
        {"to": [{"podSelector": {}}]},
        {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
    ]
    if g.data_egress:
        cidr, port = g.data_egress
        egress.append({"to": [{"ipBlock": {"cidr": cidr}}], "ports": [{"protocol": "TCP", "port": port}]})
    return [
        {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {"name": "preview-quota", **meta},
            "spec": {"hard": {
                "requests.cpu": g.quota_cpu,
                "limits.cpu": g.quota_cpu,
                "requests.memory": g.quota_memory,
                "limits.memory": g.quota_memory,
                "pods": str(g.quota_pods),
                "services.loadbalancers": "0",
                "services.nodeports": "0",
            }},
        },
        {
            "apiVersion": "v1",
            "kind": "LimitRange",
            "metadata": {"name": "preview-limits", **meta},
            # Defaults, so that pods without resources still fit the quota.
            "spec": {"limits": [{
                "type": "Container",
                "default": {"cpu": "500m", "memory": "512Mi"},
                "defaultRequest": {"cpu": "50m", "memory": "64Mi"},
            }]},
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "preview-isolation", **meta},
            "spec": {
                "podSelector": {},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [{"from": [
                    {"podSelector": {}},
                    {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": g.ingress_namespace}}},
                ]}],
                "egress": egress,
            },
        },
    ]


def object_keys(objects: Iterable[dict]) -> set[tuple[str, str, str]]:
    """(apiVersion, kind, name) of each object: what a later prune keeps."""
    return {(o["apiVersion"], o["kind"], o["metadata"]["name"]) for o in objects}
