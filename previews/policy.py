"""A repository's manifest policy and guardrails, from its row and the settings.

`previews/manifests.py` holds the rules as pure functions; this module only
gathers their inputs, so that the request-time check (the API) and the deploy
(provisioning) judge a bundle by the same policy.
"""

from __future__ import annotations

from django.conf import settings

from previews import links, manifests, validators
from previews.models import Repository


def manifest_policy(repository: Repository) -> manifests.Policy:
    return manifests.Policy(
        storage_classes=repository.storage_class_list,
        ingress_annotations=frozenset(settings.PREVIEWS_INGRESS_ANNOTATIONS),
        pod_security=repository.pod_security,
        token_audiences=repository.token_audience_list,
        annotation_domains=repository.annotation_domain_list,
        allow_cached_images=repository.allow_cached_images,
    )


def placement(repository: Repository) -> manifests.Placement:
    """The nodes the repository's pods run on (its fields were validated when they were saved)."""
    return manifests.Placement(node_selector=validators.parse_node_selector(repository.node_selector),
                               tolerations=validators.parse_tolerations(repository.tolerations))


def routing(repository: Repository) -> str:
    """The repository's routing mode: its own choice, else the service's default."""
    return repository.routing or settings.PREVIEWS_ROUTING


def gateway() -> manifests.GatewayRef:
    """The one Gateway every preview's HTTPRoute attaches to."""
    return manifests.GatewayRef(namespace=settings.PREVIEWS_GATEWAY_NAMESPACE, name=settings.PREVIEWS_GATEWAY_NAME,
                                section=settings.PREVIEWS_GATEWAY_SECTION)


def admitted_namespace(repository: Repository) -> str:
    """Whose pods may reach a preview's pods: the ingress controller's, or the Gateway's data plane."""
    if routing(repository) == manifests.ROUTING_GATEWAY:
        return settings.PREVIEWS_GATEWAY_DATAPLANE_NAMESPACE or settings.PREVIEWS_GATEWAY_NAMESPACE
    return settings.PREVIEWS_INGRESS_NAMESPACE


def waits_for_route_status(repository: Repository) -> bool:
    """Whether readiness includes the Gateway's controller accepting the preview's routes."""
    return routing(repository) == manifests.ROUTING_GATEWAY and settings.PREVIEWS_GATEWAY_WAIT_FOR_STATUS


def guardrails(repository: Repository) -> manifests.Guardrails:
    return manifests.Guardrails(
        quota_cpu=repository.quota_cpu, quota_memory=repository.quota_memory, quota_pods=repository.quota_pods,
        ingress_namespace=admitted_namespace(repository), quota_storage=repository.quota_storage,
        quota_pvcs=repository.quota_pvcs, quota_ephemeral_storage=repository.quota_ephemeral_storage,
        dns_namespace=settings.PREVIEWS_DNS_NAMESPACE, dns_pod_labels=dict(settings.PREVIEWS_DNS_POD_LABELS),
    )


def request_context(repository: Repository, namespace: str) -> manifests.RenderContext:
    """The render context of a preview that may not exist yet: enough to judge a bundle at request time."""
    return manifests.RenderContext(
        namespace=namespace, host=links.preview_host(repository, namespace), labels={},
        service_name=repository.service_name, service_port=repository.service_port,
        tls_secret_name=repository.tls_secret_name, ingress_class=settings.PREVIEWS_INGRESS_CLASS,
        tls_secret_source=tls_secret_source(repository),
        policy=manifest_policy(repository), routing=routing(repository), gateway=gateway(),
        placement=placement(repository),
    )


def tls_secret_source(repository: Repository) -> str:
    """Where the repository's TLS Secret is copied from into each preview namespace (Ingress routing only; with
    the Gateway API its listener holds the certificate), or "" when nothing is copied."""
    if repository.tls_secret_name and routing(repository) == manifests.ROUTING_INGRESS:
        return settings.PREVIEWS_TLS_SECRET_NAMESPACE
    return ""


def bundle_problems(repository: Repository, namespace: str, text: str) -> manifests.ManifestError | None:
    """Why this bundle would be refused at deploy time, or None. Parsing and validation only, no I/O."""
    ctx = request_context(repository, namespace)
    try:
        manifests.render_bundle(text, ctx, settings.PREVIEWS_MAX_MANIFEST_BYTES)
    except manifests.ManifestError as exc:
        return exc
    return None
