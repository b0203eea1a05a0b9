"""The metadata rules every object (and pod template, and claim template) follows."""

from __future__ import annotations

from collections.abc import Iterator

from previews.manifests.allowlists import (
    HARMLESS_RESERVED_ANNOTATIONS,
    METADATA_FIELDS,
    METADATA_REASONS,
    SAFE_ANNOTATION_VALUE_RE,
)
from previews.manifests.context import Policy
from previews.manifests.objects import as_dict
from previews.manifests.problems import Problem, expect_dict, join_path, only


def _in_domain(prefix: str, domains) -> bool:
    return any(prefix == domain or prefix.endswith("." + domain) for domain in domains)


def _reserved_annotation(key: str) -> bool:
    prefix = key.split("/", 1)[0] if "/" in key else ""
    return _in_domain(prefix, ("kubernetes.io", "k8s.io"))


def _foreign_annotation(key: str, policy: Policy) -> bool:
    """An annotation in a domain of its own (eks.amazonaws.com/role-arn, vault.hashicorp.com/agent-inject,
    karpenter.sh/do-not-disrupt): some controller acts on it. Keys without a prefix, or with a prefix that is no
    domain (checksum/config), are the app's own."""
    prefix = key.split("/", 1)[0] if "/" in key else ""
    return "." in prefix and not _in_domain(prefix, policy.annotation_domains)


def validate_metadata(i: int, path: str, metadata: dict, ingress_policy: Policy | None = None,
                      policy: Policy | None = None) -> Iterator[Problem]:
    """`ingress_policy` for an Ingress (its annotations follow the configured list), else `policy` for the
    repository's annotation domains (None: the defaults, no domain allowed)."""
    yield from only(i, path, metadata, METADATA_FIELDS, "metadata", METADATA_REASONS)
    if metadata.get("creationTimestamp") is not None:
        yield Problem(i, f"{path}.creationTimestamp", "creationTimestamp is set by Kubernetes; leave it out")
    for sub in ("labels", "annotations"):
        yield from expect_dict(i, f"{path}.{sub}", metadata.get(sub))
        for key, value in as_dict(metadata.get(sub)).items():
            if not isinstance(value, str):
                yield Problem(i, join_path(f"{path}.{sub}", key), f"{sub} values must be strings, not "
                                                              f"{type(value).__name__}")
    for key, value in as_dict(metadata.get("annotations")).items():
        where = join_path(f"{path}.annotations", key)
        if ingress_policy is not None:
            if key not in ingress_policy.ingress_annotations:
                yield Problem(i, where, "this Ingress annotation is not allowed: only the configured list is "
                                        "(never ingress-nginx snippets, auth, aliases, mirrors, redirects or "
                                        "references to other namespaces)")
            elif isinstance(value, str) and not SAFE_ANNOTATION_VALUE_RE.fullmatch(value):
                yield Problem(i, where, "the value may hold only letters, digits, spaces and . _ , : / * + = @ % -")
        elif _reserved_annotation(key):
            if key not in HARMLESS_RESERVED_ANNOTATIONS:
                yield Problem(i, where, "annotations in the domains reserved for Kubernetes and its controllers "
                                        "(kubernetes.io, k8s.io) are not allowed")
        elif _foreign_annotation(key, policy or Policy()):
            yield Problem(i, where, "annotations in another domain are not allowed unless the repository lists the "
                                    "domain (annotation_domains): controllers act on them, e.g. to give the pod a "
                                    "cloud or Vault identity (IRSA, workload identity, kube2iam, the Vault "
                                    "injector) or to keep a node from being drained (karpenter.sh)")
