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
"""

from __future__ import annotations

import copy
import functools
import math
import pickle
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import yaml

from previews.validators import DNS_SUBDOMAIN_RE, IMAGE_RE, parse_image_name

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "pr-previews"
# Namespaces never created, adopted or deleted, whatever a label says (PREVIEWS_PROTECTED_NAMESPACES adds more).
PROTECTED_NAMESPACES = frozenset({"default", "kube-system", "kube-public", "kube-node-lease", "staging"})
REPOSITORY_LABEL = "previews.dev/repository-id"
PR_LABEL = "previews.dev/pr"
# On every pod template: the commit deployed, for the app to read through the downward API.
HEAD_SHA_ANNOTATION = "previews.dev/head-sha"
FIELD_MANAGER = "pr-previews"
# Write this as an Ingress host in a template; it becomes the preview's own host.
HOST_PLACEHOLDER = "PREVIEW_HOST"
GENERATED_INGRESS_NAME = "preview"
GENERATED_ROUTE_NAME = "preview"
# How a preview is reached: an Ingress, or a Gateway API HTTPRoute attached to one configured Gateway.
ROUTING_INGRESS = "ingress"
ROUTING_GATEWAY = "gateway"
ROUTING_MODES = (ROUTING_INGRESS, ROUTING_GATEWAY)
GATEWAY_GROUP = "gateway.networking.k8s.io"
GATEWAY_API_VERSION = f"{GATEWAY_GROUP}/v1"
# The route kinds of gateway routing: each is watched for its status and pruned like any allowed kind.
ROUTE_KINDS = ("HTTPRoute",)

# Bounds on what a bundle may be, so that neither parsing nor the error report can blow up.
MAX_DEPTH = 32  # nesting of mappings and lists; a Deployment needs about 12
MAX_OBJECTS = 500
MAX_PROBLEMS = 50  # listed in an error; the rest are counted
MAX_SHOWN = 80  # characters of a user-supplied value quoted in a message
MAX_INT = 2**63 - 1

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
    # Only with the repository's routing set to gateway (an Ingress only with ingress routing).
    "HTTPRoute": (GATEWAY_API_VERSION,),
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
    "Gateway": "previews attach to the cluster's configured Gateway; they never bring their own",
    "GatewayClass": "cluster-scoped kinds are not allowed",
    "ReferenceGrant": "it would open this namespace to references from other namespaces; previews reference only "
                      "their own objects",
    "GRPCRoute": "previews are routed by an HTTPRoute only",
    "TLSRoute": "previews are routed by an HTTPRoute only",
    "TCPRoute": "previews are routed by an HTTPRoute only",
    "UDPRoute": "previews are routed by an HTTPRoute only",
}

TOP_LEVEL_FIELDS = frozenset({
    "apiVersion", "kind", "metadata", "spec", "data", "stringData", "binaryData", "type", "immutable", "status",
    "secrets", "imagePullSecrets", "automountServiceAccountToken",
})
METADATA_FIELDS = frozenset({"name", "namespace", "labels", "annotations", "creationTimestamp"})
METADATA_REASONS = {
    "finalizers": "no controller in a preview removes a finalizer, so the teardown would hang",
    "ownerReferences": "the service owns every object's lifecycle; owner references are not allowed",
    "generateName": "give every object a fixed name",
}
# Annotations in the Kubernetes-reserved domains change what Kubernetes or a controller does; only
# these harmless ones are allowed outside an Ingress's own allow-list.
HARMLESS_RESERVED_ANNOTATIONS = frozenset({
    "kubectl.kubernetes.io/default-container", "kubectl.kubernetes.io/default-logs-container",
    "kubectl.kubernetes.io/restartedAt",
})
# ingress-nginx annotations that name no host, URL, secret or snippet (configurable per installation).
DEFAULT_INGRESS_ANNOTATIONS = frozenset({
    f"nginx.ingress.kubernetes.io/{name}" for name in (
        "proxy-body-size", "proxy-connect-timeout", "proxy-read-timeout", "proxy-send-timeout",
        "proxy-buffering", "proxy-buffer-size", "proxy-request-buffering", "ssl-redirect", "force-ssl-redirect",
        "backend-protocol", "enable-cors", "cors-allow-origin", "cors-allow-methods", "cors-allow-headers",
        "cors-allow-credentials", "cors-max-age", "affinity", "session-cookie-name", "limit-rps",
        "limit-connections",
    )
})
# No quotes, semicolons, braces, dollars, backslashes or line breaks: nothing that could end a directive
# in the controller's generated configuration.
SAFE_ANNOTATION_VALUE_RE = re.compile(r"[A-Za-z0-9 ._,:/*+=@%-]{0,512}")
INGRESS_PATH_RE = re.compile(r"/[A-Za-z0-9._~/-]*")
INGRESS_PATH_TYPES = ("Prefix", "Exact", "ImplementationSpecific")

# HTTPRoute (gateway routing): the fields of the standard channel that keep a route inside its preview.
HTTPROUTE_SPEC_FIELDS = ("parentRefs", "hostnames", "rules")
HTTPROUTE_SPEC_REASONS = {"useDefaultGateways": "the service attaches routes to the configured Gateway"}
PARENT_REF_FIELDS = ("group", "kind", "namespace", "name", "sectionName")
PARENT_REF_REASONS = {"port": "the service attaches routes to the configured Gateway (and listener)"}
HTTPROUTE_RULE_FIELDS = ("name", "matches", "filters", "backendRefs", "timeouts")
HTTPROUTE_MATCH_FIELDS = ("path", "headers", "queryParams", "method")
HTTPROUTE_PATH_TYPES = ("PathPrefix", "Exact")  # RegularExpression is implementation-specific
HTTPROUTE_VALUE_MATCH_TYPES = ("Exact",)
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
BACKEND_REF_FIELDS = ("group", "kind", "name", "port", "weight", "filters")
BACKEND_REF_REASONS = {"namespace": "backends must be Services in the preview's own namespace"}
# filter type -> the field holding its settings. Anything else (ExtensionRef, CORS, ExternalAuth, ...) is refused.
ROUTE_FILTERS = {
    "RequestHeaderModifier": "requestHeaderModifier",
    "ResponseHeaderModifier": "responseHeaderModifier",
    "URLRewrite": "urlRewrite",
    "RequestRedirect": "requestRedirect",
    "RequestMirror": "requestMirror",
}
HEADER_MODIFIER_FIELDS = ("set", "add", "remove")
HEADER_NAME_RE = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,256}")
URL_REWRITE_FIELDS = ("hostname", "path")
PATH_MODIFIER_TYPES = {"ReplaceFullPath": "replaceFullPath", "ReplacePrefixMatch": "replacePrefixMatch"}
REDIRECT_FIELDS = ("scheme", "hostname", "path", "port", "statusCode")
REDIRECT_SCHEMES = ("http", "https")
REDIRECT_PORTS = (80, 443)
REDIRECT_STATUS_CODES = (301, 302, 303, 307, 308)
MIRROR_FIELDS = ("backendRef", "percent", "fraction")
TIMEOUT_FIELDS = ("request", "backendRequest")
DURATION_RE = re.compile(r"([0-9]{1,5}(h|m|s|ms)){1,4}")

SERVICE_SPEC_FIELDS = frozenset({
    "ports", "selector", "type", "clusterIP", "clusterIPs", "sessionAffinity", "sessionAffinityConfig",
    "publishNotReadyAddresses", "ipFamilies", "ipFamilyPolicy", "internalTrafficPolicy", "trafficDistribution",
})
SERVICE_PORT_FIELDS = frozenset({"name", "protocol", "port", "targetPort", "appProtocol"})

POD_SPEC_FIELDS = frozenset({
    "containers", "initContainers", "volumes", "restartPolicy", "terminationGracePeriodSeconds",
    "activeDeadlineSeconds", "dnsPolicy", "dnsConfig", "serviceAccountName", "serviceAccount",
    "automountServiceAccountToken", "securityContext", "imagePullSecrets", "hostname", "subdomain", "affinity",
    "topologySpreadConstraints", "enableServiceLinks", "shareProcessNamespace", "hostAliases", "readinessGates",
    "setHostnameAsFQDN", "os", "hostNetwork", "hostPID", "hostIPC", "hostUsers", "nodeSelector", "tolerations",
})
POD_SPEC_REASONS = {
    "nodeName": "it pins the pod to a node, past the scheduler",
    "priorityClassName": "it could preempt other workloads (system-node-critical and the like)",
    "priority": "it could preempt other workloads",
    "preemptionPolicy": "previews do not choose their preemption",
    "runtimeClassName": "previews run with the cluster's default runtime",
    "schedulerName": "previews are placed by the default scheduler",
    "overhead": "pod overhead comes from a RuntimeClass",
    "resourceClaims": "previews do not claim node devices",
    "resources": "set resources per container",
    "schedulingGates": "a gated pod would hold its quota forever",
    "ephemeralContainers": "ephemeral containers are for debugging a running pod",
}
# Only pinning to an operating system or architecture is harmless.
NODE_SELECTOR_KEYS = frozenset({"kubernetes.io/os", "kubernetes.io/arch"})
DNS_POLICIES = ("ClusterFirst", "None")
AFFINITY_FIELDS = frozenset({"podAffinity", "podAntiAffinity"})

CONTAINER_FIELDS = frozenset({
    "name", "image", "command", "args", "workingDir", "ports", "env", "envFrom", "resources", "volumeMounts",
    "volumeDevices", "livenessProbe", "readinessProbe", "startupProbe", "lifecycle", "terminationMessagePath",
    "terminationMessagePolicy", "imagePullPolicy", "securityContext", "stdin", "stdinOnce", "tty",
    "restartPolicy", "resizePolicy",
})
CONTAINER_PORT_FIELDS = frozenset({"name", "containerPort", "protocol", "hostPort"})
VOLUME_MOUNT_FIELDS = frozenset({
    "name", "mountPath", "readOnly", "subPath", "subPathExpr", "recursiveReadOnly", "mountPropagation",
})
POD_SECURITY_FIELDS = frozenset({
    "runAsUser", "runAsGroup", "runAsNonRoot", "fsGroup", "fsGroupChangePolicy", "supplementalGroups",
    "supplementalGroupsPolicy", "seccompProfile", "appArmorProfile", "seLinuxOptions", "seLinuxChangePolicy",
})
CONTAINER_SECURITY_FIELDS = frozenset({
    "runAsUser", "runAsGroup", "runAsNonRoot", "readOnlyRootFilesystem", "allowPrivilegeEscalation",
    "privileged", "capabilities", "seccompProfile", "appArmorProfile", "procMount", "seLinuxOptions",
})
SECURITY_REASONS = {
    "sysctls": "sysctls change the node's kernel settings for the pod",
    "windowsOptions": "Windows host-process options are not allowed",
}
CONFINED_PROFILES = ("RuntimeDefault", "Localhost")
SELINUX_TYPES = ("container_t", "container_init_t", "container_kvm_t", "container_engine_t")
# Pod Security "baseline": the capabilities a container may add. "restricted" allows only NET_BIND_SERVICE.
BASELINE_CAPABILITIES = frozenset({
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE", "SETFCAP",
    "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
})
RESTRICTED_CAPABILITIES = frozenset({"NET_BIND_SERVICE"})
POD_SECURITY_LEVELS = ("baseline", "restricted")

VOLUME_TYPES = ("configMap", "secret", "emptyDir", "projected", "downwardAPI", "persistentVolumeClaim", "ephemeral")
PROJECTED_SOURCES = ("configMap", "secret", "downwardAPI", "serviceAccountToken")
PVC_SPEC_FIELDS = frozenset({"accessModes", "resources", "storageClassName", "volumeMode", "dataSource",
                             "dataSourceRef"})
PVC_REASONS = {
    "volumeName": "it would bind an existing PersistentVolume, possibly another namespace's data",
    "selector": "it would bind an existing PersistentVolume by its labels",
    "volumeAttributesClassName": "volume attribute classes are cluster-wide settings",
}
# (apiGroup, kind) a PVC may be cloned or restored from, always inside the preview's namespace.
PVC_DATA_SOURCES = {("", "PersistentVolumeClaim"), ("snapshot.storage.k8s.io", "VolumeSnapshot")}

SECRET_TYPES = ("Opaque", "kubernetes.io/tls", "kubernetes.io/dockerconfigjson", "kubernetes.io/dockercfg",
                "kubernetes.io/basic-auth", "kubernetes.io/ssh-auth")
PDB_SPEC_FIELDS = frozenset({"selector", "maxUnavailable", "unhealthyPodEvictionPolicy"})
PERCENT_RE = re.compile(r"(100|[1-9][0-9]?)%")
SIMPLE_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _show(value) -> str:
    """A user-supplied value quoted in a message, never longer than MAX_SHOWN characters."""
    text = repr(value)
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 3] + "..."


def _bare(value) -> str:
    """Like _show, without quotes for strings."""
    return _show(value)[1:-1] if isinstance(value, str) else _show(value)


def _join(path: str, key: str) -> str:
    if SIMPLE_KEY_RE.fullmatch(key):
        return f"{path}.{key}" if path else key
    shown = key if len(key) <= MAX_SHOWN else key[: MAX_SHOWN - 3] + "..."
    return f"{path}[{shown}]"


@dataclass(frozen=True)
class Problem:
    document: int  # 0-based index of the document in the bundle
    path: str  # field path inside that document, e.g. spec.template.spec.containers[0].image
    message: str

    def __post_init__(self) -> None:
        # Bounded, whatever the bundle holds: a status message must never grow with the input.
        object.__setattr__(self, "path", self.path[:300])
        object.__setattr__(self, "message", self.message[:500])

    def __str__(self) -> str:
        where = f"document {self.document + 1}" + (f", {self.path}" if self.path else "")
        return f"{where}: {self.message}"


class ManifestError(Exception):
    """The bundle broke the policy. Carries the first MAX_PROBLEMS problems and how many there were."""

    def __init__(self, problems: list[Problem]):
        self.total = len(problems)
        self.problems = problems[:MAX_PROBLEMS]
        text = "; ".join(str(p) for p in self.problems)
        if self.total > MAX_PROBLEMS:
            text += f"; and {self.total - MAX_PROBLEMS} more problems"
        super().__init__(text)


@dataclass(frozen=True)
class Policy:
    """What one repository's previews may do beyond the fixed rules."""

    storage_classes: tuple[str, ...] = ()  # storageClassName values a PVC may name (omitting it: the default)
    ingress_annotations: frozenset[str] = DEFAULT_INGRESS_ANNOTATIONS
    pod_security: str = "baseline"  # or "restricted": the bundle is checked against it before it is applied


@dataclass(frozen=True)
class GatewayRef:
    """The one Gateway (and optionally its listener) that every preview's HTTPRoute attaches to."""

    namespace: str = "gateway-system"
    name: str = "previews"
    section: str = ""  # a listener name; empty: every listener of the Gateway that admits the route

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}" + (f" (listener {self.section})" if self.section else "")

    def parent_ref(self) -> dict:
        ref = {"group": GATEWAY_GROUP, "kind": "Gateway", "namespace": self.namespace, "name": self.name}
        if self.section:
            ref["sectionName"] = self.section
        return ref


@dataclass(frozen=True)
class Placement:
    """Which nodes a preview's pods run on: the repository's setting, never the PR's manifests."""

    node_selector: tuple[tuple[str, str], ...] = ()  # (label, value): added to every pod's nodeSelector
    tolerations: tuple[tuple[str, str], ...] = ()  # (taint key, effect): tolerated whatever the taint's value

    def apply(self, pod_spec: dict) -> None:
        if self.node_selector:
            pod_spec["nodeSelector"] = {**_dict(pod_spec.get("nodeSelector")), **dict(self.node_selector)}
        if self.tolerations:
            pod_spec["tolerations"] = [{"key": key, "operator": "Exists", "effect": effect}
                                       for key, effect in self.tolerations]


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
    policy: Policy = field(default_factory=Policy)
    routing: str = ROUTING_INGRESS  # or ROUTING_GATEWAY
    gateway: GatewayRef = field(default_factory=GatewayRef)
    placement: Placement = field(default_factory=Placement)
    head_sha: str = ""

    def __post_init__(self) -> None:
        if self.routing not in ROUTING_MODES:
            raise ValueError(f"{self.routing!r} is not a routing mode ({', '.join(ROUTING_MODES)})")


def namespace_security_labels(level: str) -> dict[str, str]:
    """Pod Security Admission labels for a preview namespace: `level` enforced, restricted warned and audited."""
    if level not in POD_SECURITY_LEVELS:
        raise ValueError(f"{level!r} is not a Pod Security level for previews ({', '.join(POD_SECURITY_LEVELS)})")
    return {
        "pod-security.kubernetes.io/enforce": level,
        "pod-security.kubernetes.io/enforce-version": "latest",
        "pod-security.kubernetes.io/warn": "restricted",
        "pod-security.kubernetes.io/audit": "restricted",
    }


# --- parsing ------------------------------------------------------------------------


class _PlainDataLoader(yaml.SafeLoader):
    """SafeLoader that refuses aliases (billion-laughs style size blow-ups) and deep nesting, and keeps
    timestamps as the strings they were written as (as kubectl does)."""

    def __init__(self, stream) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.constructor.ConstructorError(
                None, None, "YAML aliases (*name) are not allowed; write the data out", event.start_mark
            )
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                event = self.peek_event()
                raise yaml.composer.ComposerError(
                    None, None, f"nested more than {MAX_DEPTH} levels deep", event.start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


_PlainDataLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


@functools.lru_cache(maxsize=32)
def _parsed_documents(text: str) -> bytes:
    """The YAML documents of `text`, pickled. Most deploys render their repository's one template, and
    parsing it in pure Python was the largest part of rendering; each caller unpickles its own copy."""
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
        raise ManifestError([Problem(index, "", f"not plain YAML data{where}: {str(reason)[:200]}")]) from None
    finally:
        loader.dispose()
    return pickle.dumps(documents, protocol=pickle.HIGHEST_PROTOCOL)


def parse_bundle(text: str, max_bytes: int) -> list[dict]:
    """Parse multi-document YAML into a list of objects, expanding `kind: List`.

    Raises ManifestError when the text is too large, is not plain YAML data, or
    holds something other than objects.
    """
    size = len(text.encode())
    if size > max_bytes:
        raise ManifestError([Problem(0, "", f"the bundle is {size} bytes; the limit is {max_bytes}")])
    documents: list = pickle.loads(_parsed_documents(text))

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
    if len(objects) > MAX_OBJECTS:
        raise ManifestError([Problem(0, "", f"the bundle holds {len(objects)} objects; the limit is {MAX_OBJECTS}")])
    return objects


# --- validation ---------------------------------------------------------------------


def validate(objects: list[dict], ctx: RenderContext) -> list[Problem]:
    """Every policy problem in the bundle, in document order."""
    problems: list[Problem] = []
    seen: dict[tuple[str, str], int] = {}
    for i, obj in enumerate(objects):
        data_problems = list(plain_data_problems(i, obj))
        if data_problems:
            # Non-string keys or odd types: the rest of the checks could misread the object.
            problems.extend(data_problems)
            continue
        problems.extend(_validate_object(i, obj, ctx))
        key = (str(obj.get("kind")), str(_dict(obj.get("metadata")).get("name")))
        if key in seen:
            problems.append(Problem(i, "metadata.name", f"{key[0]} {_show(key[1])} appears twice (first in "
                                                        f"document {seen[key] + 1})"))
        seen.setdefault(key, i)
    return problems


def plain_data_problems(i: int, value, path: str = "") -> Iterator[Problem]:
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
                    yield Problem(i, here, f"the key {_show(key)} is a {type(key).__name__}; only string keys "
                                           "are allowed")
                    continue
                children.append((_join(here, key), child, depth + 1))
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


def _dict(value) -> dict:
    return value if isinstance(value, dict) else {}


def _list(value) -> list:
    return value if isinstance(value, list) else []


def _empty(value) -> bool:
    return value is None or value == {} or value == [] or value == "" or value is False


def _only(i: int, path: str, mapping: dict, allowed: Iterable[str], what: str,
          reasons: dict[str, str] | None = None) -> Iterator[Problem]:
    """Every key of `mapping` outside `allowed` is a problem, with its reason when one is known."""
    for key in mapping:
        if key in allowed:
            continue
        reason = (reasons or {}).get(key)
        message = f"{key} is not allowed: {reason}" if reason else f"{_show(key)} is not an allowed {what} field"
        yield Problem(i, _join(path, key), message)


def _expect_dict(i: int, path: str, value) -> Iterator[Problem]:
    if value is not None and not isinstance(value, dict):
        yield Problem(i, path, f"expected a mapping, got {type(value).__name__}")


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
        yield Problem(i, "kind", f"{_bare(kind)} is not allowed; allowed kinds: {allowed}")
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
                                       f"not {_show(api_version)}")
    yield from _only(i, "", obj, TOP_LEVEL_FIELDS, "top-level")
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict):
        yield Problem(i, "metadata", "every object needs metadata with a name")
        return
    name = metadata.get("name")
    if not isinstance(name, str) or len(name) > 253 or not DNS_SUBDOMAIN_RE.fullmatch(name):
        yield Problem(i, "metadata.name", f"{_show(name)} is not a valid object name (lower-case DNS subdomain)")
    namespace = metadata.get("namespace")
    if namespace not in (None, "", ctx.namespace):
        yield Problem(i, "metadata.namespace", f"objects must stay in the preview's namespace; "
                                               f"{_show(namespace)} is another namespace")
    yield from _validate_metadata(i, "metadata", metadata, ingress_policy=ctx.policy if kind == "Ingress" else None)
    spec = obj.get("spec")
    yield from _expect_dict(i, "spec", spec)
    spec = _dict(spec)
    for path, template in _pod_templates(kind, obj):
        yield from _validate_metadata(i, f"{path}.metadata", _dict(template.get("metadata")))
        yield from _validate_pod_spec(i, f"{path}.spec", _dict(template.get("spec")), ctx)
    checks = {
        "Service": _validate_service, "Ingress": _validate_ingress, "PersistentVolumeClaim": _validate_pvc_object,
        "PodDisruptionBudget": _validate_pdb, "Secret": _validate_secret, "StatefulSet": _validate_statefulset,
        "HorizontalPodAutoscaler": _validate_hpa, "HTTPRoute": _validate_httproute,
    }
    if kind in checks:
        yield from checks[kind](i, obj, spec, ctx)


def _reserved_annotation(key: str) -> bool:
    prefix = key.split("/", 1)[0] if "/" in key else ""
    return any(prefix == domain or prefix.endswith("." + domain) for domain in ("kubernetes.io", "k8s.io"))


def _validate_metadata(i: int, path: str, metadata: dict, ingress_policy: Policy | None = None) -> Iterator[Problem]:
    yield from _only(i, path, metadata, METADATA_FIELDS, "metadata", METADATA_REASONS)
    if metadata.get("creationTimestamp") is not None:
        yield Problem(i, f"{path}.creationTimestamp", "creationTimestamp is set by Kubernetes; leave it out")
    for sub in ("labels", "annotations"):
        yield from _expect_dict(i, f"{path}.{sub}", metadata.get(sub))
        for key, value in _dict(metadata.get(sub)).items():
            if not isinstance(value, str):
                yield Problem(i, _join(f"{path}.{sub}", key), f"{sub} values must be strings, not "
                                                              f"{type(value).__name__}")
    for key, value in _dict(metadata.get("annotations")).items():
        where = _join(f"{path}.annotations", key)
        if ingress_policy is not None:
            if key not in ingress_policy.ingress_annotations:
                yield Problem(i, where, "this Ingress annotation is not allowed: only the configured list is "
                                        "(never ingress-nginx snippets, auth, aliases, mirrors, redirects or "
                                        "references to other namespaces)")
            elif isinstance(value, str) and not SAFE_ANNOTATION_VALUE_RE.fullmatch(value):
                yield Problem(i, where, "the value may hold only letters, digits, spaces and . _ , : / * + = @ % -")
        elif _reserved_annotation(key) and key not in HARMLESS_RESERVED_ANNOTATIONS:
            yield Problem(i, where, "annotations in the domains reserved for Kubernetes and its controllers "
                                    "(kubernetes.io, k8s.io) are not allowed")


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


def _validate_pod_spec(i: int, path: str, pod_spec: dict, ctx: RenderContext) -> Iterator[Problem]:
    reasons = dict(POD_SPEC_REASONS)
    yield from _only(i, path, {k: v for k, v in pod_spec.items() if not _empty(v)}, POD_SPEC_FIELDS, "pod spec",
                     reasons)
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if pod_spec.get(flag):
            yield Problem(i, f"{path}.{flag}", f"{flag} is not allowed")
    if pod_spec.get("hostUsers") not in (None, True):
        yield Problem(i, f"{path}.hostUsers", "hostUsers: false needs user-namespace support on the node; leave it "
                                              "out")
    for key in _dict(pod_spec.get("nodeSelector")):
        if key not in NODE_SELECTOR_KEYS:
            yield Problem(i, _join(f"{path}.nodeSelector", key), "only kubernetes.io/os and kubernetes.io/arch may "
                                                                  "be selected; previews are not pinned to nodes")
    if not _empty(pod_spec.get("tolerations")):
        yield Problem(i, f"{path}.tolerations", "tolerations are not allowed: they let a pod onto tainted nodes "
                                                "(control plane, dedicated pools)")
    dns_policy = pod_spec.get("dnsPolicy")
    if dns_policy is not None and dns_policy not in DNS_POLICIES:
        yield Problem(i, f"{path}.dnsPolicy", f"dnsPolicy {_show(dns_policy)} is not allowed; use "
                                              f"{' or '.join(DNS_POLICIES)}")
    affinity = pod_spec.get("affinity")
    yield from _expect_dict(i, f"{path}.affinity", affinity)
    yield from _only(i, f"{path}.affinity", {k: v for k, v in _dict(affinity).items() if not _empty(v)},
                     AFFINITY_FIELDS, "affinity", {"nodeAffinity": "it pins previews to chosen nodes"})
    pod_security = pod_spec.get("securityContext")
    yield from _expect_dict(i, f"{path}.securityContext", pod_security)
    pod_security = _dict(pod_security)
    yield from _validate_security_context(i, f"{path}.securityContext", pod_security, POD_SECURITY_FIELDS)
    for j, volume in enumerate(_list(pod_spec.get("volumes"))):
        yield from _validate_volume(i, f"{path}.volumes[{j}]", volume, ctx)
    for cpath, container in _containers(pod_spec):
        yield from _validate_container(i, f"{path}.{cpath}", container, pod_security, ctx)


def _validate_security_context(i: int, path: str, security: dict, allowed: frozenset[str]) -> Iterator[Problem]:
    yield from _only(i, path, security, allowed, "securityContext", SECURITY_REASONS)
    for name in ("seccompProfile", "appArmorProfile"):
        profile = security.get(name)
        if profile is not None:
            kind = _dict(profile).get("type")
            if kind not in CONFINED_PROFILES:
                yield Problem(i, f"{path}.{name}.type", f"{_show(kind)} is not allowed; use "
                                                        f"{' or '.join(CONFINED_PROFILES)}")
    selinux = security.get("seLinuxOptions")
    if selinux is not None:
        yield from _only(i, f"{path}.seLinuxOptions", _dict(selinux), ("type", "level"), "seLinuxOptions")
        selinux_type = _dict(selinux).get("type")
        if selinux_type not in (None, "", *SELINUX_TYPES):
            yield Problem(i, f"{path}.seLinuxOptions.type", f"{_show(selinux_type)} is not allowed; use one of "
                                                            f"{', '.join(SELINUX_TYPES)}")


def _validate_container(i: int, path: str, container: dict, pod_security: dict,
                        ctx: RenderContext) -> Iterator[Problem]:
    yield from _only(i, path, container, CONTAINER_FIELDS, "container")
    security = container.get("securityContext")
    yield from _expect_dict(i, f"{path}.securityContext", security)
    security = _dict(security)
    spath = f"{path}.securityContext"
    yield from _validate_security_context(i, spath, security, CONTAINER_SECURITY_FIELDS)
    if security.get("privileged"):
        yield Problem(i, f"{spath}.privileged", "privileged containers are not allowed")
    if security.get("procMount") not in (None, "Default"):
        yield Problem(i, f"{spath}.procMount", "only the Default procMount is allowed")
    capabilities = _dict(security.get("capabilities"))
    yield from _only(i, f"{spath}.capabilities", capabilities, ("add", "drop"), "capabilities")
    restricted = ctx.policy.pod_security == "restricted"
    addable = RESTRICTED_CAPABILITIES if restricted else BASELINE_CAPABILITIES
    for k, capability in enumerate(_list(capabilities.get("add"))):
        if capability not in addable:
            yield Problem(i, f"{spath}.capabilities.add[{k}]",
                          f"adding {_show(capability)} is not allowed under Pod Security {ctx.policy.pod_security}; "
                          f"allowed: {', '.join(sorted(addable))}")
    if restricted:
        yield from _restricted_container(i, spath, security, pod_security, capabilities)
    for k, port in enumerate(_list(container.get("ports"))):
        port = _dict(port)
        yield from _only(i, f"{path}.ports[{k}]", port, CONTAINER_PORT_FIELDS, "container port",
                         {"hostIP": "containers do not bind to the node's addresses"})
        if port.get("hostPort"):
            yield Problem(i, f"{path}.ports[{k}].hostPort", "hostPort is not allowed")
    for k, mount in enumerate(_list(container.get("volumeMounts"))):
        mount = _dict(mount)
        yield from _only(i, f"{path}.volumeMounts[{k}]", mount, VOLUME_MOUNT_FIELDS, "volume mount")
        if mount.get("mountPropagation") not in (None, "None"):
            yield Problem(i, f"{path}.volumeMounts[{k}].mountPropagation", "mount propagation to or from the "
                                                                           "node is not allowed")
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        yield from _validate_handler(i, f"{path}.{probe}", _dict(container.get(probe)))
    for hook in ("postStart", "preStop"):
        yield from _validate_handler(i, f"{path}.lifecycle.{hook}", _dict(_dict(container.get("lifecycle")).get(hook)))
    image = container.get("image")
    if not isinstance(image, str) or not IMAGE_RE.fullmatch(image):
        yield Problem(i, f"{path}.image", f"{_show(image)} is not an image reference")


def _restricted_container(i: int, spath: str, security: dict, pod_security: dict,
                          capabilities: dict) -> Iterator[Problem]:
    def effective(name: str):
        return security.get(name, pod_security.get(name))

    if security.get("allowPrivilegeEscalation") is not False:
        yield Problem(i, f"{spath}.allowPrivilegeEscalation", "Pod Security restricted needs it set to false")
    if "ALL" not in _list(capabilities.get("drop")):
        yield Problem(i, f"{spath}.capabilities.drop", "Pod Security restricted needs ALL dropped")
    if effective("runAsNonRoot") is not True:
        yield Problem(i, f"{spath}.runAsNonRoot", "Pod Security restricted needs runAsNonRoot: true (here or on "
                                                  "the pod)")
    if effective("runAsUser") == 0:
        yield Problem(i, f"{spath}.runAsUser", "Pod Security restricted does not allow running as user 0")
    if _dict(effective("seccompProfile")).get("type") not in CONFINED_PROFILES:
        yield Problem(i, f"{spath}.seccompProfile", "Pod Security restricted needs a seccompProfile of type "
                                                    "RuntimeDefault or Localhost (here or on the pod)")


def _validate_handler(i: int, path: str, handler: dict) -> Iterator[Problem]:
    """Probes and lifecycle hooks run from the node: they may only reach the pod itself."""
    for action in ("httpGet", "tcpSocket"):
        if _dict(handler.get(action)).get("host"):
            yield Problem(i, f"{path}.{action}.host", "the kubelet would connect from the node to another host; "
                                                      "probes and hooks may only reach the pod itself")


def _validate_volume(i: int, path: str, volume, ctx: RenderContext) -> Iterator[Problem]:
    if not isinstance(volume, dict):
        yield Problem(i, path, "expected a volume (a mapping)")
        return
    sources = [key for key in volume if key != "name"]
    allowed = ", ".join(VOLUME_TYPES)
    for source in sources:
        if source not in VOLUME_TYPES:
            yield Problem(i, _join(path, source), f"{_bare(source)} volumes are not allowed; allowed volume "
                                                  f"types: {allowed}")
    if len(sources) != 1:
        yield Problem(i, path, "a volume needs exactly one source")
    if "projected" in volume:
        for k, projection in enumerate(_list(_dict(volume["projected"]).get("sources"))):
            yield from _only(i, f"{path}.projected.sources[{k}]", _dict(projection), PROJECTED_SOURCES,
                             "projected volume source")
    if "ephemeral" in volume:
        template = _dict(_dict(volume["ephemeral"]).get("volumeClaimTemplate"))
        tpath = f"{path}.ephemeral.volumeClaimTemplate"
        yield from _validate_metadata(i, f"{tpath}.metadata", _dict(template.get("metadata")))
        yield from _validate_pvc_spec(i, f"{tpath}.spec", _dict(template.get("spec")), ctx)


def _validate_pvc_spec(i: int, path: str, spec: dict, ctx: RenderContext) -> Iterator[Problem]:
    yield from _only(i, path, spec, PVC_SPEC_FIELDS, "PersistentVolumeClaim spec", PVC_REASONS)
    if "storageClassName" in spec and spec["storageClassName"] is not None:
        name = spec["storageClassName"]
        if name == "":
            yield Problem(i, f"{path}.storageClassName", "an empty storageClassName would bind a pre-provisioned "
                                                         "PersistentVolume; leave it out for the default class")
        elif name not in ctx.policy.storage_classes:
            allowed = ", ".join(ctx.policy.storage_classes) or "none: leave storageClassName out for the default"
            yield Problem(i, f"{path}.storageClassName", f"storage class {_show(name)} is not allowed for this "
                                                         f"repository; allowed: {allowed}")
    for source_field in ("dataSource", "dataSourceRef"):
        source = spec.get(source_field)
        if source is None:
            continue
        source = _dict(source)
        key = (source.get("apiGroup") or "", source.get("kind"))
        if key not in PVC_DATA_SOURCES:
            yield Problem(i, f"{path}.{source_field}.kind", f"{_show(key[1])} is not allowed as a data source; "
                                                            "clone a PersistentVolumeClaim or restore a "
                                                            "VolumeSnapshot of this namespace")
        if source.get("namespace") not in (None, "", ctx.namespace):
            yield Problem(i, f"{path}.{source_field}.namespace", "data sources must be in the preview's own "
                                                                 f"namespace, not {_show(source.get('namespace'))}")


def _validate_pvc_object(i: int, obj: dict, spec: dict, ctx: RenderContext) -> Iterator[Problem]:
    yield from _validate_pvc_spec(i, "spec", spec, ctx)


def _validate_statefulset(i: int, obj: dict, spec: dict, ctx: RenderContext) -> Iterator[Problem]:
    for k, template in enumerate(_list(spec.get("volumeClaimTemplates"))):
        template = _dict(template)
        yield from _validate_metadata(i, f"spec.volumeClaimTemplates[{k}].metadata", _dict(template.get("metadata")))
        yield from _validate_pvc_spec(i, f"spec.volumeClaimTemplates[{k}].spec", _dict(template.get("spec")), ctx)


def _validate_service(i: int, obj: dict, spec: dict, ctx: RenderContext) -> Iterator[Problem]:
    service_type = spec.get("type", "ClusterIP")
    if service_type != "ClusterIP":
        yield Problem(i, "spec.type", f"Services of type {_bare(service_type)} are not allowed; use "
                                      "ClusterIP and the preview's Ingress")
    if spec.get("externalIPs"):
        yield Problem(i, "spec.externalIPs", "externalIPs are not allowed")
    yield from _only(i, "spec", {k: v for k, v in spec.items() if k not in ("externalIPs", "type")},
                     SERVICE_SPEC_FIELDS, "Service spec")
    if spec.get("clusterIP") not in (None, "", "None"):
        yield Problem(i, "spec.clusterIP", "choose no cluster IP (or None for a headless Service)")
    if any(ip not in ("", "None") for ip in _list(spec.get("clusterIPs"))):
        yield Problem(i, "spec.clusterIPs", "choose no cluster IPs (or None for a headless Service)")
    for k, port in enumerate(_list(spec.get("ports"))):
        yield from _only(i, f"spec.ports[{k}]", _dict(port), SERVICE_PORT_FIELDS, "Service port",
                         {"nodePort": "node ports are not allowed"})


def _validate_ingress(i: int, obj: dict, spec: dict, ctx: RenderContext) -> Iterator[Problem]:
    allowed = (ctx.host, HOST_PLACEHOLDER)
    yield from _only(i, "spec", spec, ("rules", "tls", "ingressClassName"), "Ingress spec", {
        "defaultBackend": "a default backend would catch every host; route by the preview's host instead"})
    if spec.get("ingressClassName") not in (None, ctx.ingress_class):
        chosen = repr(ctx.ingress_class) if ctx.ingress_class else "the cluster's default"
        yield Problem(i, "spec.ingressClassName", f"the service sets the Ingress class ({chosen}); leave "
                                                  "ingressClassName out")
    rules = _list(spec.get("rules"))
    if not rules:
        yield Problem(i, "spec.rules", f"an Ingress needs a rule for host {ctx.host!r} (or {HOST_PLACEHOLDER})")
    for j, rule in enumerate(rules):
        rule = _dict(rule)
        host = rule.get("host")
        if host not in allowed:
            shown = "an empty host" if not host else _show(host)
            yield Problem(i, f"spec.rules[{j}].host", f"{shown} is not this preview's host {ctx.host!r} "
                                                      f"(write {HOST_PLACEHOLDER} to have it filled in)")
        yield from _only(i, f"spec.rules[{j}]", rule, ("host", "http"), "Ingress rule")
        for k, route in enumerate(_list(_dict(rule.get("http")).get("paths"))):
            route = _dict(route)
            rpath = f"spec.rules[{j}].http.paths[{k}]"
            yield from _only(i, rpath, route, ("path", "pathType", "backend"), "Ingress path")
            if route.get("pathType") not in INGRESS_PATH_TYPES:
                yield Problem(i, f"{rpath}.pathType", f"pathType must be one of {', '.join(INGRESS_PATH_TYPES)}")
            path = route.get("path", "/")
            if not isinstance(path, str) or not INGRESS_PATH_RE.fullmatch(path):
                yield Problem(i, f"{rpath}.path", f"{_show(path)} is not a plain path (/ followed by letters, digits "
                                                  "and . _ ~ / -)")
            yield from _only(i, f"{rpath}.backend", _dict(route.get("backend")), ("service",), "Ingress backend", {
                "resource": "Ingresses route only to Services"})
    for j, tls in enumerate(_list(spec.get("tls"))):
        yield from _only(i, f"spec.tls[{j}]", _dict(tls), ("hosts", "secretName"), "Ingress TLS")
        for k, host in enumerate(_list(_dict(tls).get("hosts"))):
            if host not in allowed:
                yield Problem(i, f"spec.tls[{j}].hosts[{k}]", f"{_show(host)} is not this preview's host "
                                                              f"{ctx.host!r}")


def _own_host(i: int, path: str, host, ctx: RenderContext, what: str = "hostname") -> Iterator[Problem]:
    if host in (ctx.host, HOST_PLACEHOLDER):
        return
    if isinstance(host, str) and "*" in host:
        yield Problem(i, path, f"wildcard {what}s are not allowed ({_show(host)}); a preview is reached only at "
                               f"its own host {ctx.host!r}")
        return
    shown = "an empty hostname" if not host else _show(host)
    yield Problem(i, path, f"{shown} is not this preview's host {ctx.host!r} (write {HOST_PLACEHOLDER} to have it "
                           "filled in)")


def _validate_httproute(i: int, obj: dict, spec: dict, ctx: RenderContext) -> Iterator[Problem]:
    yield from _only(i, "spec", spec, HTTPROUTE_SPEC_FIELDS, "HTTPRoute spec", HTTPROUTE_SPEC_REASONS)
    for j, parent in enumerate(_list(spec.get("parentRefs"))):
        yield from _validate_parent_ref(i, f"spec.parentRefs[{j}]", _dict(parent), ctx)
    hostnames = _list(spec.get("hostnames"))
    if not hostnames:
        # Without hostnames a route matches every host its Gateway listens for: staging's, other previews'.
        yield Problem(i, "spec.hostnames", f"an HTTPRoute needs hostnames [{ctx.host!r}] (or {HOST_PLACEHOLDER}); "
                                           "without them it would catch every host of the Gateway")
    for k, host in enumerate(hostnames):
        yield from _own_host(i, f"spec.hostnames[{k}]", host, ctx)
    for j, rule in enumerate(_list(spec.get("rules"))):
        rule = _dict(rule)
        rpath = f"spec.rules[{j}]"
        yield from _only(i, rpath, rule, HTTPROUTE_RULE_FIELDS, "HTTPRoute rule")
        for k, match in enumerate(_list(rule.get("matches"))):
            yield from _validate_route_match(i, f"{rpath}.matches[{k}]", _dict(match))
        for k, route_filter in enumerate(_list(rule.get("filters"))):
            yield from _validate_route_filter(i, f"{rpath}.filters[{k}]", _dict(route_filter), ctx)
        for k, backend in enumerate(_list(rule.get("backendRefs"))):
            backend = _dict(backend)
            bpath = f"{rpath}.backendRefs[{k}]"
            yield from _validate_backend_ref(i, bpath, backend, BACKEND_REF_FIELDS)
            for m, route_filter in enumerate(_list(backend.get("filters"))):
                yield from _validate_route_filter(i, f"{bpath}.filters[{m}]", _dict(route_filter), ctx)
        timeouts = _dict(rule.get("timeouts"))
        yield from _only(i, f"{rpath}.timeouts", timeouts, TIMEOUT_FIELDS, "HTTPRoute timeouts")
        for key, value in timeouts.items():
            if key in TIMEOUT_FIELDS and (not isinstance(value, str) or not DURATION_RE.fullmatch(value)):
                yield Problem(i, f"{rpath}.timeouts.{key}", f"{_show(value)} is not a duration such as 30s or 1m")


def _validate_parent_ref(i: int, path: str, parent: dict, ctx: RenderContext) -> Iterator[Problem]:
    """Only the configured Gateway (and listener) may be a parent; leaving parentRefs out has it filled in."""
    yield from _only(i, path, parent, PARENT_REF_FIELDS, "parentRef", PARENT_REF_REASONS)
    gateway = ctx.gateway
    hint = f"only the configured Gateway {gateway} may be a parent (leave parentRefs out to have it filled in)"
    if parent.get("group", GATEWAY_GROUP) != GATEWAY_GROUP or parent.get("kind", "Gateway") != "Gateway":
        yield Problem(i, f"{path}.kind", f"{_show(parent.get('kind'))} is not a Gateway: {hint}")
    # An omitted namespace means the route's own, where no Gateway of ours lives.
    if parent.get("namespace") != gateway.namespace:
        yield Problem(i, f"{path}.namespace", f"{_show(parent.get('namespace'))} is not the Gateway's namespace: "
                                              f"{hint}")
    if parent.get("name") != gateway.name:
        yield Problem(i, f"{path}.name", f"{_show(parent.get('name'))} is another Gateway: {hint}")
    if parent.get("sectionName") not in (None, gateway.section or None):
        yield Problem(i, f"{path}.sectionName", f"{_show(parent.get('sectionName'))} is another listener: {hint}")


def _validate_route_match(i: int, path: str, match: dict) -> Iterator[Problem]:
    yield from _only(i, path, match, HTTPROUTE_MATCH_FIELDS, "HTTPRoute match")
    if "path" in match:
        route_path = _dict(match.get("path"))
        yield from _only(i, f"{path}.path", route_path, ("type", "value"), "path match")
        if route_path.get("type", "PathPrefix") not in HTTPROUTE_PATH_TYPES:
            yield Problem(i, f"{path}.path.type", f"path matches of type {_show(route_path.get('type'))} are not "
                                                  f"allowed; use {' or '.join(HTTPROUTE_PATH_TYPES)}")
        value = route_path.get("value", "/")
        if not isinstance(value, str) or not INGRESS_PATH_RE.fullmatch(value):
            yield Problem(i, f"{path}.path.value", f"{_show(value)} is not a plain path (/ followed by letters, "
                                                   "digits and . _ ~ / -)")
    for group in ("headers", "queryParams"):
        for k, item in enumerate(_list(match.get(group))):
            item = _dict(item)
            yield from _only(i, f"{path}.{group}[{k}]", item, ("type", "name", "value"), "value match")
            if item.get("type", "Exact") not in HTTPROUTE_VALUE_MATCH_TYPES:
                yield Problem(i, f"{path}.{group}[{k}].type", f"{_show(item.get('type'))} matches are not allowed; "
                                                              "use Exact")
    if "method" in match and match["method"] not in HTTP_METHODS:
        yield Problem(i, f"{path}.method", f"{_show(match['method'])} is not an HTTP method")


def _validate_backend_ref(i: int, path: str, backend: dict, allowed: Iterable[str]) -> Iterator[Problem]:
    """A Service of the preview's own namespace: no namespace field, no other kind."""
    yield from _only(i, path, backend, allowed, "backendRef", BACKEND_REF_REASONS)
    if backend.get("group") not in (None, "") or backend.get("kind", "Service") != "Service":
        yield Problem(i, f"{path}.kind", f"{_show(backend.get('kind'))} is not allowed: routes reach only Services "
                                         "in the preview's own namespace")
    name = backend.get("name")
    if not isinstance(name, str) or not DNS_SUBDOMAIN_RE.fullmatch(name):
        yield Problem(i, f"{path}.name", f"{_show(name)} is not a Service name")


def _validate_route_filter(i: int, path: str, route_filter: dict, ctx: RenderContext) -> Iterator[Problem]:
    kind = route_filter.get("type")
    if kind not in ROUTE_FILTERS:
        yield Problem(i, f"{path}.type", f"filters of type {_show(kind)} are not allowed; allowed: "
                                         f"{', '.join(ROUTE_FILTERS)}")
        return
    key = ROUTE_FILTERS[kind]
    yield from _only(i, path, route_filter, ("type", key), f"{kind} filter")
    settings_path = f"{path}.{key}"
    config = _dict(route_filter.get(key))
    if kind in ("RequestHeaderModifier", "ResponseHeaderModifier"):
        yield from _only(i, settings_path, config, HEADER_MODIFIER_FIELDS, "header modifier")
        for op in ("set", "add"):
            for k, header in enumerate(_list(config.get(op))):
                yield from _only(i, f"{settings_path}.{op}[{k}]", _dict(header), ("name", "value"), "header")
        for op in ("set", "add", "remove"):
            for k, header in enumerate(_list(config.get(op))):
                name = header if op == "remove" else _dict(header).get("name")
                if not isinstance(name, str) or not HEADER_NAME_RE.fullmatch(name):
                    yield Problem(i, f"{settings_path}.{op}[{k}]", f"{_show(name)} is not a header name")
    elif kind == "URLRewrite":
        yield from _only(i, settings_path, config, URL_REWRITE_FIELDS, "URLRewrite")
        if "hostname" in config:
            yield from _own_host(i, f"{settings_path}.hostname", config["hostname"], ctx)
        yield from _validate_path_modifier(i, f"{settings_path}.path", config.get("path"))
    elif kind == "RequestRedirect":
        yield from _only(i, settings_path, config, REDIRECT_FIELDS, "RequestRedirect")
        # A redirect elsewhere would make the preview's host an open redirect.
        if "hostname" in config:
            yield from _own_host(i, f"{settings_path}.hostname", config["hostname"], ctx)
        if config.get("scheme", "https") not in REDIRECT_SCHEMES:
            yield Problem(i, f"{settings_path}.scheme", f"redirect to http or https only, not "
                                                        f"{_show(config.get('scheme'))}")
        if config.get("port", 443) not in REDIRECT_PORTS:
            yield Problem(i, f"{settings_path}.port", "redirect to port 80 or 443 only (or leave the port out)")
        if config.get("statusCode", 302) not in REDIRECT_STATUS_CODES:
            yield Problem(i, f"{settings_path}.statusCode", f"{_show(config.get('statusCode'))} is not a redirect "
                                                            "status code")
        yield from _validate_path_modifier(i, f"{settings_path}.path", config.get("path"))
    else:  # RequestMirror: a copy of the traffic may go only to a Service of this namespace
        yield from _only(i, settings_path, config, MIRROR_FIELDS, "RequestMirror")
        if not isinstance(config.get("backendRef"), dict):
            yield Problem(i, f"{settings_path}.backendRef", "a mirror needs a backendRef to a Service in the "
                                                            "preview's own namespace")
        else:
            yield from _validate_backend_ref(i, f"{settings_path}.backendRef", config["backendRef"],
                                             ("group", "kind", "name", "port"))


def _validate_path_modifier(i: int, path: str, modifier) -> Iterator[Problem]:
    if modifier is None:
        return
    modifier = _dict(modifier)
    kind = modifier.get("type")
    if kind not in PATH_MODIFIER_TYPES:
        yield Problem(i, f"{path}.type", f"{_show(kind)} is not allowed; use {' or '.join(PATH_MODIFIER_TYPES)}")
        return
    key = PATH_MODIFIER_TYPES[kind]
    yield from _only(i, path, modifier, ("type", key), "path modifier")
    value = modifier.get(key)
    if not isinstance(value, str) or not INGRESS_PATH_RE.fullmatch(value):
        yield Problem(i, f"{path}.{key}", f"{_show(value)} is not a plain path (/ followed by letters, digits and "
                                          ". _ ~ / -)")


def _validate_pdb(i: int, obj: dict, spec: dict, ctx: RenderContext) -> Iterator[Problem]:
    yield from _only(i, "spec", spec, PDB_SPEC_FIELDS, "PodDisruptionBudget spec", {
        "minAvailable": "a minimum can equal the replica count and block every node drain; use maxUnavailable"})
    selector = _dict(spec.get("selector"))
    if not selector.get("matchLabels") and not selector.get("matchExpressions"):
        yield Problem(i, "spec.selector", "a PodDisruptionBudget must select its pods (matchLabels or "
                                          "matchExpressions); an empty selector covers every pod in the namespace")
    budget = spec.get("maxUnavailable")
    allows = (isinstance(budget, int) and not isinstance(budget, bool) and budget >= 1) or (
        isinstance(budget, str) and PERCENT_RE.fullmatch(budget) is not None)
    if not allows:
        yield Problem(i, "spec.maxUnavailable", f"{_show(budget)} would block node drains; allow at least one "
                                                "disruption (1 or more, or a percentage from 1%)")


def _validate_secret(i: int, obj: dict, spec: dict, ctx: RenderContext) -> Iterator[Problem]:
    secret_type = obj.get("type", "Opaque")
    if secret_type not in SECRET_TYPES:
        reason = ("ServiceAccount token Secrets mint long-lived API credentials"
                  if secret_type == "kubernetes.io/service-account-token" else f"allowed: {', '.join(SECRET_TYPES)}")
        yield Problem(i, "type", f"Secrets of type {_show(secret_type)} are not allowed: {reason}")


def _validate_hpa(i: int, obj: dict, spec: dict, ctx: RenderContext) -> Iterator[Problem]:
    target = _dict(spec.get("scaleTargetRef"))
    if (target.get("apiVersion"), target.get("kind")) not in (("apps/v1", "Deployment"), ("apps/v1", "StatefulSet")):
        yield Problem(i, "spec.scaleTargetRef", "an autoscaler may scale only a Deployment or StatefulSet (apps/v1)")


# --- rendering -----------------------------------------------------------------------


def override_image(reference: str, images: dict[str, str]) -> str:
    """kustomize-style: if the reference's name (without tag/digest) is overridden, use the override."""
    name = parse_image_name(reference)
    return reference if name is None else images.get(name, reference)


def render(objects: list[dict], ctx: RenderContext) -> list[dict]:
    """The objects as they will be applied. Call `validate` first; this assumes a valid bundle."""
    rendered = []
    for original in objects:
        obj = copy.deepcopy(original)
        obj.pop("status", None)
        metadata = obj.setdefault("metadata", {})
        metadata.pop("creationTimestamp", None)
        metadata["namespace"] = ctx.namespace
        metadata["labels"] = {**_dict(metadata.get("labels")), **ctx.labels}
        for _path, pod_spec in _pod_specs(obj["kind"], obj):
            for _cpath, container in _containers(pod_spec):
                container["image"] = override_image(container["image"], ctx.images)
        place(obj, ctx)
        rendered.append(obj)
        if obj["kind"] == "Ingress":
            _fill_hosts(obj, ctx)
        elif obj["kind"] in ROUTE_KINDS:
            _fill_route(obj, ctx)
    if ctx.routing == ROUTING_GATEWAY:
        if not any(o["kind"] in ROUTE_KINDS for o in rendered):
            rendered.append(generated_route(ctx))
    elif not any(o["kind"] == "Ingress" for o in rendered):
        rendered.append(generated_ingress(ctx))
    return rendered


def place(obj: dict, ctx: RenderContext) -> dict:
    """What the service adds to every pod template of a valid object (the bundle's and its own): our labels,
    so the cluster watcher follows pods (and ReplicaSets, which copy them) with one label-selected watch; the
    commit, for the downward API; and the repository's placement."""
    for _path, template in _pod_templates(obj["kind"], obj):
        template_meta = template.setdefault("metadata", {})
        template_meta["labels"] = {**_dict(template_meta.get("labels")), **ctx.labels}
        if ctx.head_sha:
            template_meta["annotations"] = {**_dict(template_meta.get("annotations")),
                                            HEAD_SHA_ANNOTATION: ctx.head_sha}
        ctx.placement.apply(template.setdefault("spec", {}))
    return obj


def _fill_route(route: dict, ctx: RenderContext) -> None:
    """The preview's host for PREVIEW_HOST, and the configured Gateway as the only parent (validation
    refused any other)."""
    spec = route.setdefault("spec", {})
    spec["parentRefs"] = [ctx.gateway.parent_ref()]
    spec["hostnames"] = [ctx.host if h == HOST_PLACEHOLDER else h for h in _list(spec.get("hostnames"))]
    for rule in _list(spec.get("rules")):
        filters = list(_list(rule.get("filters")))
        for backend in _list(rule.get("backendRefs")):
            filters.extend(_list(_dict(backend).get("filters")))
        for route_filter in filters:
            for key in ("urlRewrite", "requestRedirect"):
                config = _dict(_dict(route_filter).get(key))
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
    for rule in _list(spec.get("rules")):
        if rule.get("host") == HOST_PLACEHOLDER:
            rule["host"] = ctx.host
    for tls in _list(spec.get("tls")):
        tls["hosts"] = [ctx.host if h == HOST_PLACEHOLDER else h for h in _list(tls.get("hosts"))]
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


def render_bundle(text: str, ctx: RenderContext, max_bytes: int) -> list[dict]:
    """Parse, validate as a whole, then render. Raises ManifestError listing every problem."""
    objects = parse_bundle(text, max_bytes)
    problems = validate(objects, ctx)
    if problems:
        raise ManifestError(problems)
    return render(objects, ctx)


# --- the namespace's own guardrails ---------------------------------------------------


# Where a preview's pods may resolve names: the cluster DNS and nothing else on port 53.
DEFAULT_DNS_NAMESPACE = "kube-system"
DEFAULT_DNS_POD_LABELS: dict[str, str] = {"k8s-app": "kube-dns"}


@dataclass(frozen=True)
class Guardrails:
    quota_cpu: str
    quota_memory: str
    quota_pods: int
    # The namespace whose pods may reach the preview's pods: the ingress controller's, or in gateway routing
    # the namespace of the Gateway's data plane (policy.guardrails chooses).
    ingress_namespace: str
    quota_storage: str = "10Gi"  # requests.storage, all PVCs together
    quota_pvcs: int = 5
    # Container scratch space and emptyDirs on the node's disk; empty: not limited (the local kwok node
    # advertises no ephemeral storage, so pods that request some could not be scheduled there).
    quota_ephemeral_storage: str = ""
    dns_namespace: str = DEFAULT_DNS_NAMESPACE
    dns_pod_labels: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_DNS_POD_LABELS))
    # (CIDR, TCP port) of the shared Postgres server holding the preview's data, which pods may reach.
    data_egress: tuple[str, int] | None = None


def guardrail_objects(ctx: RenderContext, g: Guardrails) -> list[dict]:
    """ResourceQuota, LimitRange and a default-deny NetworkPolicy for one preview namespace."""
    meta = {"namespace": ctx.namespace, "labels": dict(ctx.labels)}
    egress: list[dict] = [
        {"to": [{"podSelector": {}}]},
        # DNS, to the cluster's DNS pods only: port 53 elsewhere would be a tunnel out.
        {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": g.dns_namespace}},
                 "podSelector": {"matchLabels": dict(g.dns_pod_labels)}}],
         "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
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
                "requests.storage": g.quota_storage,
                "persistentvolumeclaims": str(g.quota_pvcs),
                "services.loadbalancers": "0",
                "services.nodeports": "0",
                **({"requests.ephemeral-storage": g.quota_ephemeral_storage,
                    "limits.ephemeral-storage": g.quota_ephemeral_storage} if g.quota_ephemeral_storage else {}),
            }},
        },
        {
            "apiVersion": "v1",
            "kind": "LimitRange",
            "metadata": {"name": "preview-limits", **meta},
            # Defaults, so that pods without resources still fit the quota.
            "spec": {"limits": [{
                "type": "Container",
                "default": {"cpu": "500m", "memory": "512Mi",
                            **({"ephemeral-storage": "256Mi"} if g.quota_ephemeral_storage else {})},
                "defaultRequest": {"cpu": "50m", "memory": "64Mi",
                                   **({"ephemeral-storage": "32Mi"} if g.quota_ephemeral_storage else {})},
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
