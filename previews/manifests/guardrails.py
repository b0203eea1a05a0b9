"""The namespace's own guardrails: ResourceQuota, LimitRange and a default-deny NetworkPolicy."""

from __future__ import annotations

from dataclasses import dataclass, field

from previews.manifests.context import RenderContext

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
    # Objects that churn: a Job's pods come and go, so the pods quota bounds only an instant.
    quota_jobs: int = 20
    quota_cronjobs: int = 5
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
                "count/jobs.batch": str(g.quota_jobs),
                "count/cronjobs.batch": str(g.quota_cronjobs),
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
