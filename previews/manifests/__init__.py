"""Rendering and validating a preview's Kubernetes objects. Pure functions, no I/O.

A bundle (a repository's template, or the manifests CI sent) is parsed as plain
YAML data, checked against the policy below as a whole, and only then rendered
for one preview: namespace set, our labels added, images overridden the way
kustomize's `images:` does, and the route (an Ingress, or a Gateway API
HTTPRoute in `gateway` routing) generated or its placeholder host filled in.
Nothing is applied unless every document passes.

The policy is an allow-list at every level: kinds, top-level and metadata
fields, pod-spec fields, volume types, security-context fields and values,
Ingress annotations, HTTPRoute parents, hostnames, backends and filters, Service
fields, PVC fields. Whatever is not listed is
refused with the document number and the field path, so a field Kubernetes
adds next year is refused until someone has judged it.

The package's public names, each defined once: `labels` (what marks our objects, importable by
the gateways), `allowlists` (the policy's tables), `problems`, `objects` (reading objects of any shape),
`context`, `parsing`, `shapes` (every field's type, checked first), `metadata`, `workloads`, `jobs` and
`routes` (validation by kind), `validation` (the bundle),
`rendering`, `guardrails`.
"""

from previews.manifests.allowlists import (
    ALLOWED_KINDS,
    CONTAINER_FIELDS,
    DEFAULT_INGRESS_ANNOTATIONS,
    MAX_DEPTH,
    MAX_NODES,
    MAX_OBJECTS,
    MAX_PROBLEMS,
    MAX_ROUTE_PATHS,
    POD_SECURITY_LEVELS,
    POD_SPEC_FIELDS,
    RESERVED_KINDS,
    VOLUME_TYPES,
)
from previews.manifests.context import GatewayRef, Placement, Policy, RenderContext, namespace_security_labels
from previews.manifests.guardrails import DEFAULT_DNS_NAMESPACE, DEFAULT_DNS_POD_LABELS, Guardrails, guardrail_objects
from previews.manifests.labels import (
    DATA_MIGRATE_JOB_PREFIX,
    DATA_POSTGRES_NAME,
    DATA_SECRET_NAME,
    FIELD_MANAGER,
    GATEWAY_API_VERSION,
    GATEWAY_GROUP,
    GENERATED_INGRESS_NAME,
    GENERATED_ROUTE_NAME,
    HEAD_SHA_ANNOTATION,
    HOST_PLACEHOLDER,
    MANAGED_BY_LABEL,
    MANAGED_BY_VALUE,
    PR_LABEL,
    PROTECTED_NAMESPACES,
    REPOSITORY_LABEL,
    ROUTE_KINDS,
    ROUTING_GATEWAY,
    ROUTING_INGRESS,
    ROUTING_MODES,
    WORKLOAD_KINDS,
)
from previews.manifests.objects import object_keys
from previews.manifests.parsing import parse_bundle
from previews.manifests.problems import ManifestError, Problem
from previews.manifests.rendering import (
    generated_ingress,
    generated_route,
    override_image,
    place,
    render,
    render_bundle,
    tls_secret_copy,
)
from previews.manifests.validation import plain_data_problems, validate

__all__ = [
    "ALLOWED_KINDS", "CONTAINER_FIELDS", "DATA_MIGRATE_JOB_PREFIX", "DATA_POSTGRES_NAME", "DATA_SECRET_NAME",
    "DEFAULT_DNS_NAMESPACE", "DEFAULT_DNS_POD_LABELS", "DEFAULT_INGRESS_ANNOTATIONS", "FIELD_MANAGER",
    "GATEWAY_API_VERSION", "GATEWAY_GROUP", "GENERATED_INGRESS_NAME", "GENERATED_ROUTE_NAME", "HEAD_SHA_ANNOTATION",
    "HOST_PLACEHOLDER", "MANAGED_BY_LABEL", "MANAGED_BY_VALUE", "MAX_DEPTH", "MAX_NODES", "MAX_OBJECTS", "MAX_PROBLEMS",
    "MAX_ROUTE_PATHS", "POD_SECURITY_LEVELS", "POD_SPEC_FIELDS", "PROTECTED_NAMESPACES", "PR_LABEL", "REPOSITORY_LABEL",
    "RESERVED_KINDS", "ROUTE_KINDS", "ROUTING_GATEWAY", "ROUTING_INGRESS", "ROUTING_MODES", "VOLUME_TYPES",
    "WORKLOAD_KINDS", "GatewayRef", "Guardrails", "ManifestError", "Placement", "Policy", "Problem", "RenderContext",
    "generated_ingress", "generated_route", "guardrail_objects", "namespace_security_labels", "object_keys",
    "override_image", "parse_bundle", "place", "plain_data_problems", "render", "render_bundle", "tls_secret_copy",
    "validate",
]
