"""Rendering a valid bundle for one preview: namespace, labels, images, and its route."""

from __future__ import annotations

import copy

from previews.manifests.allowlists import PDB_EVICTION_POLICY, PULL_POLICY
from previews.manifests.context import RenderContext
from previews.manifests.labels import (
    GATEWAY_API_VERSION,
    GENERATED_INGRESS_NAME,
    GENERATED_ROUTE_NAME,
    HEAD_SHA_ANNOTATION,
    HOST_PLACEHOLDER,
    ROUTE_KINDS,
    ROUTING_GATEWAY,
)
from previews.manifests.objects import as_dict, as_list, containers, pod_specs, pod_templates
from previews.manifests.parsing import collector_paused, parse_bundle
from previews.manifests.problems import ManifestError
from previews.manifests.validation import bundle_problems, validate
from previews.validators import parse_image_name


def override_image(reference: str, images: dict[str, str]) -> str:
    """kustomize-style: if the reference's name (without tag/digest) is overridden, use the override."""
    name = parse_image_name(reference)
    return reference if name is None else images.get(name, reference)


def place(obj: dict, ctx: RenderContext) -> dict:
    """What the service adds to every pod template of a valid object (the bundle's and its own): our labels,
    so the cluster watcher follows pods (and ReplicaSets, which copy them) with one label-selected watch; the
    commit, for the downward API; and the repository's placement."""
    for _path, template in pod_templates(obj["kind"], obj):
        # An omitted field may be written as null: validation allows it, so it is a mapping here.
        template_meta = template["metadata"] = as_dict(template.get("metadata"))
        template_meta["labels"] = {**as_dict(template_meta.get("labels")), **ctx.labels}
        if ctx.head_sha:
            template_meta["annotations"] = {**as_dict(template_meta.get("annotations")),
                                            HEAD_SHA_ANNOTATION: ctx.head_sha}
        template["spec"] = as_dict(template.get("spec"))
        ctx.placement.apply(template["spec"])
        if not ctx.policy.allow_cached_images:
            # IfNotPresent (the default for a tagged image) or Never would run an image another tenant pulled
            # onto the node, without this repository's registry credentials.
            for _cpath, container in containers(template["spec"]):
                container["imagePullPolicy"] = PULL_POLICY
    return obj


def render(objects: list[dict], ctx: RenderContext, *, in_place: bool = False) -> list[dict]:
    """The objects as they will be applied. Call `validate` first; this assumes a valid bundle. The objects are
    copied first unless `in_place` (their owner drops them)."""
    rendered = []
    for original in objects:
        obj = original if in_place else copy.deepcopy(original)
        obj.pop("status", None)
        metadata = obj.setdefault("metadata", {})
        metadata.pop("creationTimestamp", None)
        metadata["namespace"] = ctx.namespace
        metadata["labels"] = {**as_dict(metadata.get("labels")), **ctx.labels}
        for _path, pod_spec in pod_specs(obj["kind"], obj):
            for _cpath, container in containers(pod_spec):
                container["image"] = override_image(container["image"], ctx.images)
        place(obj, ctx)
        if obj["kind"] == "PodDisruptionBudget":
            obj["spec"].setdefault("unhealthyPodEvictionPolicy", PDB_EVICTION_POLICY)
        elif obj["kind"] == "CronJob":
            obj["spec"].setdefault("concurrencyPolicy", "Forbid")
        if obj["kind"] == "Ingress":
            _fill_hosts(obj, ctx)
        elif obj["kind"] in ROUTE_KINDS:
            _fill_route(obj, ctx)
        rendered.append(obj)
    if ctx.routing == ROUTING_GATEWAY:
        if not any(o["kind"] in ROUTE_KINDS for o in rendered):
            rendered.append(generated_route(ctx))
    elif not any(o["kind"] == "Ingress" for o in rendered):
        rendered.append(generated_ingress(ctx))
    return rendered


def _fill_route(route: dict, ctx: RenderContext) -> None:
    """The preview's host for PREVIEW_HOST, and the configured Gateway as the only parent (validation
    refused any other)."""
    spec = route.setdefault("spec", {})
    spec["parentRefs"] = [ctx.gateway.parent_ref()]
    spec["hostnames"] = [ctx.host if h == HOST_PLACEHOLDER else h for h in as_list(spec.get("hostnames"))]
    for rule in as_list(spec.get("rules")):
        filters = list(as_list(rule.get("filters")))
        for backend in as_list(rule.get("backendRefs")):
            filters.extend(as_list(as_dict(backend).get("filters")))
        for route_filter in filters:
            for key in ("urlRewrite", "requestRedirect"):
                config = as_dict(as_dict(route_filter).get(key))
                if config.get("hostname") == HOST_PLACEHOLDER:
                    config["hostname"] = ctx.host


def generated_route(ctx: RenderContext) -> dict:
    """An HTTPRoute for the preview's host, attached to the configured Gateway, to the repository's Service."""
    return {
        "apiVersion": GATEWAY_API_VERSION,
        "kind": "HTTPRoute",
        "metadata": {"name": GENERATED_ROUTE_NAME, "namespace": ctx.namespace, "labels": dict(ctx.labels)},
        "spec": {
            "parentRefs": [ctx.gateway.parent_ref()],
            "hostnames": [ctx.host],
            "rules": [{
                "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                "backendRefs": [{"name": ctx.service_name, "port": ctx.service_port}],
            }],
        },
    }


def _fill_hosts(ingress: dict, ctx: RenderContext) -> None:
    spec = ingress.get("spec") or {}
    for rule in as_list(spec.get("rules")):
        if rule.get("host") == HOST_PLACEHOLDER:
            rule["host"] = ctx.host
    for tls in as_list(spec.get("tls")):
        tls["hosts"] = [ctx.host if h == HOST_PLACEHOLDER else h for h in as_list(tls.get("hosts"))]
    # The repository's certificate covers its previews' hosts unless the bundle names TLS of its own.
    if ctx.tls_secret_name and not as_list(spec.get("tls")):
        spec["tls"] = [{"hosts": [ctx.host], "secretName": ctx.tls_secret_name}]
    # The class is always the service's choice (validation refused any other).
    if ctx.ingress_class:
        spec["ingressClassName"] = ctx.ingress_class
    else:
        spec.pop("ingressClassName", None)


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


def tls_secret_copy(ctx: RenderContext, data: dict[str, str]) -> dict:
    """The repository's TLS Secret as the preview's namespace gets it: the source's certificate and key (base64,
    as read), our labels (so the prune and the reaper treat it like the rest)."""
    return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": ctx.tls_secret_name, "namespace": ctx.namespace, "labels": dict(ctx.labels)},
            "data": {key: data[key] for key in ("tls.crt", "tls.key")}}


def render_bundle(text: str, ctx: RenderContext, max_bytes: int) -> list[dict]:
    """Parse, validate as a whole, then render. Raises ManifestError listing every problem."""
    with collector_paused():
        objects = parse_bundle(text, max_bytes)  # a fresh copy, ours to change
        problems = validate(objects, ctx)
        if not problems:
            problems = bundle_problems(objects)
        if problems:
            raise ManifestError(problems)
        return render(objects, ctx, in_place=True)
