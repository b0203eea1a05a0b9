"""Validating a bundle as a whole: plain data, then each object by its kind."""

from __future__ import annotations

import math
from collections.abc import Iterator

from previews.manifests.allowlists import (
    ALLOWED_KINDS,
    MAX_DEPTH,
    MAX_INT,
    MAX_ROUTE_PATHS,
    RESERVED_KINDS,
    SECRET_TYPES,
    TOP_LEVEL_FIELDS,
)
from previews.manifests.context import RenderContext
from previews.manifests.jobs import validate_cronjob, validate_job
from previews.manifests.labels import (
    DATA_MIGRATE_JOB_PREFIX,
    DATA_POSTGRES_NAME,
    DATA_SECRET_NAME,
    HOST_PLACEHOLDER,
    ROUTE_KINDS,
    ROUTING_GATEWAY,
)
from previews.manifests.metadata import validate_metadata
from previews.manifests.objects import as_dict, as_list, pod_templates
from previews.manifests.problems import Problem, expect_dict, join_path, only, quoted, quoted_bare
from previews.manifests.routes import validate_httproute, validate_ingress, validate_service
from previews.manifests.shapes import shape_problems
from previews.manifests.workloads import (
    pdb_overlaps,
    validate_hpa,
    validate_pdb,
    validate_pod_spec,
    validate_pvc_object,
    validate_statefulset,
)
from previews.validators import DNS_SUBDOMAIN_RE


def validate(objects: list[dict], ctx: RenderContext) -> list[Problem]:
    """Every policy problem in the bundle, in document order."""
    problems: list[Problem] = []
    seen: dict[tuple[str, str], int] = {}
    for i, obj in enumerate(objects):
        data_problems = list(plain_data_problems(i, obj)) or list(shape_problems(i, str(obj.get("kind")), obj))
        if data_problems:
            # Non-string keys, odd types, a field of the wrong type: the rest of the checks could misread the
            # object (types are checked before values, at every depth).
            problems.extend(data_problems)
            continue
        problems.extend(_validate_object(i, obj, ctx))
        key = (str(obj.get("kind")), str(as_dict(obj.get("metadata")).get("name")))
        if key in seen:
            problems.append(Problem(i, "metadata.name", f"{key[0]} {quoted(key[1])} appears twice (first in "
                                                        f"document {seen[key] + 1})"))
        seen.setdefault(key, i)
    if not problems:
        problems.extend(pdb_overlaps(objects))
    return problems


def bundle_problems(objects: list[dict]) -> list[Problem]:
    """What only a repository's bundle may not do (the service's own objects are checked by `validate` alone):
    define the objects the service renders for the preview's data, or load the shared route controller."""
    problems: list[Problem] = []
    reserved = {("Secret", DATA_SECRET_NAME): "the Secret the service writes the preview's database settings to",
                ("Service", DATA_POSTGRES_NAME): "the Service of the in-namespace Postgres the service runs",
                ("StatefulSet", DATA_POSTGRES_NAME): "the in-namespace Postgres the service runs"}
    routes = 0
    for i, obj in enumerate(objects):
        kind, name = obj.get("kind"), as_dict(obj.get("metadata")).get("name")
        if not isinstance(kind, str) or not isinstance(name, str):
            continue
        if (kind, name) in reserved:
            problems.append(Problem(i, "metadata.name", f"{quoted(name)} is reserved: it is {reserved[kind, name]}"))
        elif kind == "Job" and name.startswith(DATA_MIGRATE_JOB_PREFIX):
            problems.append(Problem(i, "metadata.name", f"Job names starting with {DATA_MIGRATE_JOB_PREFIX} are "
                                                        "reserved for the service's data migrate Job"))
        spec = as_dict(obj.get("spec"))
        if kind == "Ingress":
            routes += sum(len(as_list(as_dict(as_dict(rule).get("http")).get("paths")))
                          for rule in as_list(spec.get("rules")))
        elif kind in ROUTE_KINDS:
            routes += sum(max(1, len(as_list(as_dict(rule).get("matches")))) for rule in as_list(spec.get("rules")))
    if routes > MAX_ROUTE_PATHS:
        problems.append(Problem(0, "", f"the bundle routes {routes} paths (Ingress paths and HTTPRoute matches); "
                                       f"the limit is {MAX_ROUTE_PATHS}"))
    return problems


def plain_data_problems(i: int, value: object, path: str = "") -> Iterator[Problem]:
    """JSON-shaped data only: string keys; strings, finite numbers in int64, booleans, null, lists, mappings;
    at most MAX_DEPTH levels. Iterative, so no input can exhaust the stack."""
    stack = [(path, value, 0)]
    while stack:
        here, item, depth = stack.pop()
        if isinstance(item, dict | list) and depth >= MAX_DEPTH:
            yield Problem(i, here, f"nested more than {MAX_DEPTH} levels deep")
            continue
        if isinstance(item, dict):
            children = []
            for key, child in item.items():
                if not isinstance(key, str):
                    yield Problem(i, here, f"the key {quoted(key)} is a {type(key).__name__}; only string keys "
                                           "are allowed")
                    continue
                children.append((join_path(here, key), child, depth + 1))
            stack.extend(reversed(children))
        elif isinstance(item, list):
            stack.extend(reversed([(f"{here}[{j}]", child, depth + 1) for j, child in enumerate(item)]))
        elif item is None or isinstance(item, bool | str):
            continue
        elif isinstance(item, int):
            if abs(item) > MAX_INT:
                yield Problem(i, here, "the number is out of range (64-bit integers only)")
        elif isinstance(item, float):
            if not math.isfinite(item):
                yield Problem(i, here, f"{item} is not a finite number")
        else:
            yield Problem(i, here, f"a {type(item).__name__} value is not plain data (strings, numbers, booleans, "
                                   "null, lists and mappings only)")


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
        yield Problem(i, "kind", f"{quoted_bare(kind)} is not allowed; allowed kinds: {allowed}")
        return
    if kind == "Ingress" and ctx.routing == ROUTING_GATEWAY:
        yield Problem(i, "kind", "this repository routes through the Gateway API (routing: gateway): leave the "
                                 "Ingress out (an HTTPRoute is generated) or bring an HTTPRoute with hostnames "
                                 f"[{HOST_PLACEHOLDER}]")
        return
    if kind in ROUTE_KINDS and ctx.routing != ROUTING_GATEWAY:
        yield Problem(i, "kind", f"this repository routes through an Ingress (routing: ingress): an {kind} needs "
                                 "routing: gateway; leave it out (an Ingress is generated) or bring an Ingress")
        return
    if api_version not in ALLOWED_KINDS[kind]:
        yield Problem(i, "apiVersion", f"{kind} must use apiVersion {' or '.join(ALLOWED_KINDS[kind])}, "
                                       f"not {quoted(api_version)}")
    yield from only(i, "", obj, TOP_LEVEL_FIELDS, "top-level")
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict):
        yield Problem(i, "metadata", "every object needs metadata with a name")
        return
    name = metadata.get("name")
    if not isinstance(name, str) or len(name) > 253 or not DNS_SUBDOMAIN_RE.fullmatch(name):
        yield Problem(i, "metadata.name", f"{quoted(name)} is not a valid object name (lower-case DNS subdomain)")
    namespace = metadata.get("namespace")
    if namespace not in (None, "", ctx.namespace):
        yield Problem(i, "metadata.namespace", f"objects must stay in the preview's namespace; "
                                               f"{quoted(namespace)} is another namespace")
    yield from validate_metadata(i, "metadata", metadata, ingress_policy=ctx.policy if kind == "Ingress" else None,
                                 policy=ctx.policy)
    spec = obj.get("spec")
    yield from expect_dict(i, "spec", spec)
    spec = as_dict(spec)
    for path, template in pod_templates(kind, obj):
        yield from validate_metadata(i, f"{path}.metadata", as_dict(template.get("metadata")), policy=ctx.policy)
        yield from validate_pod_spec(i, f"{path}.spec", as_dict(template.get("spec")), ctx)
    checks = {
        "Service": validate_service, "Ingress": validate_ingress, "PersistentVolumeClaim": validate_pvc_object,
        "PodDisruptionBudget": validate_pdb, "Secret": _validate_secret, "StatefulSet": validate_statefulset,
        "HorizontalPodAutoscaler": validate_hpa, "HTTPRoute": validate_httproute, "Job": validate_job,
        "CronJob": validate_cronjob,
    }
    if kind in checks:
        yield from checks[kind](i, obj, spec, ctx)


def _validate_secret(i: int, obj: dict, spec: dict, ctx: RenderContext) -> Iterator[Problem]:
    if ctx.tls_secret_source and as_dict(obj.get("metadata")).get("name") == ctx.tls_secret_name:
        yield Problem(i, "metadata.name", f"{quoted(ctx.tls_secret_name)} is the repository's TLS Secret, which the "
                                          f"service copies into the namespace from {ctx.tls_secret_source}")
    secret_type = obj.get("type", "Opaque")
    if secret_type not in SECRET_TYPES:
        reason = ("ServiceAccount token Secrets mint long-lived API credentials"
                  if secret_type == "kubernetes.io/service-account-token" else f"allowed: {', '.join(SECRET_TYPES)}")
        yield Problem(i, "type", f"Secrets of type {quoted(secret_type)} are not allowed: {reason}")
