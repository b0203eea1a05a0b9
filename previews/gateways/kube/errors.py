"""The Kubernetes gateway's own refusals, in the hierarchy of previews.gateways.errors."""

from __future__ import annotations

from previews.gateways import errors


class NamespaceNotOurs(errors.Conflict):
    """The namespace exists without our managed-by label, or belongs to another preview; never touched."""


class ProtectedNamespace(errors.GatewayError):
    """A protected namespace (kube-system, default, staging, ...) was asked for."""


class KindNotServed(errors.NotFound):
    """The cluster does not serve this kind (its CRD is not installed, or the version is not served)."""
