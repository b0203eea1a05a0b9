"""Secrets the service reads to copy: a repository's TLS certificate, from the namespace the operator names."""

from __future__ import annotations

from previews.gateways import errors
from previews.gateways.kube.client import REQUEST_TIMEOUT, call, core_api

TLS_KEYS = ("tls.crt", "tls.key")


def read_tls_secret(namespace: str, name: str) -> dict[str, str]:
    """The base64 `tls.crt` and `tls.key` of a Secret of type kubernetes.io/tls. Raises errors.NotFound when it
    does not exist, errors.GatewayError when it is not a TLS Secret (the message says which)."""
    secret = call(f"read Secret {namespace}/{name}", core_api().read_namespaced_secret, name, namespace,
                  _request_timeout=REQUEST_TIMEOUT)
    data = secret.data or {}
    if secret.type != "kubernetes.io/tls" or any(not data.get(key) for key in TLS_KEYS):
        raise errors.GatewayError(f"Secret {namespace}/{name} is not a TLS Secret with tls.crt and tls.key "
                                  f"(its type is {secret.type})")
    return {key: data[key] for key in TLS_KEYS}
