"""What rendering and validation need to know of one preview: its namespace, host, labels, policy, Gateway."""

from __future__ import annotations

from dataclasses import dataclass, field

from previews.manifests.allowlists import DEFAULT_INGRESS_ANNOTATIONS, POD_SECURITY_LEVELS
from previews.manifests.labels import GATEWAY_GROUP, ROUTING_INGRESS, ROUTING_MODES
from previews.manifests.objects import as_dict


@dataclass(frozen=True)
class Policy:
    """What one repository's previews may do beyond the fixed rules."""

    storage_classes: tuple[str, ...] = ()  # storageClassName values a PVC may name (omitting it: the default)
    ingress_annotations: frozenset[str] = DEFAULT_INGRESS_ANNOTATIONS
    pod_security: str = "baseline"  # or "restricted": the bundle is checked against it before it is applied
    token_audiences: tuple[str, ...] = ()  # audiences a projected service-account token may name
    annotation_domains: tuple[str, ...] = ()  # annotation domains allowed beyond the plain ones
    allow_cached_images: bool = False  # False: every container's imagePullPolicy is rendered as Always


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
            pod_spec["nodeSelector"] = {**as_dict(pod_spec.get("nodeSelector")), **dict(self.node_selector)}
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
    tls_secret_source: str = ""  # the namespace the service copies tls_secret_name from ("": it does not)
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
