"""The Kubernetes gateway's transport: one client per thread, calls with bounded retries and our errors,
resource discovery, and one small pool for concurrent requests."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import urllib3
from django.conf import settings
from kubernetes import client, config, dynamic
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic.exceptions import DynamicApiError, ResourceNotFoundError

from previews.gateways import errors
from previews.gateways.kube.errors import KindNotServed
from previews.manifests.labels import GATEWAY_GROUP, MANAGED_BY_LABEL, MANAGED_BY_VALUE

logger = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")

MANAGED_SELECTOR = f"{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"
RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0)
REQUEST_TIMEOUT = (5, 30)  # connect, read seconds


def translate(exc: Exception, action: str) -> errors.GatewayError:
    """The client's exception as one of ours (the caller raises it `from exc`)."""
    if isinstance(exc, ApiException | DynamicApiError):
        status = int(getattr(exc, "status", 0) or 0)
        cls = errors.for_status(status) if status else errors.GatewayError
        return cls(f"{action}: {_api_message(exc)}", status=status, reason=str(getattr(exc, "reason", "") or ""))
    return errors.Unavailable(f"{action}: the Kubernetes API is unreachable ({exc.__class__.__name__}: {exc})")


def _api_message(exc: Exception) -> str:
    body = getattr(exc, "body", None)
    if body:
        try:
            data = json.loads(body)
            if isinstance(data, dict) and data.get("message"):
                return str(data["message"])
        except (ValueError, TypeError):
            pass
    summary = getattr(exc, "summary", None)
    if callable(summary):
        return summary()
    return f"HTTP {getattr(exc, 'status', '?')} {getattr(exc, 'reason', '')}".strip()


def call(action: str, fn: Callable[..., T], *args, retry: bool = True, **kwargs) -> T:
    """Run one API call, retrying 429/5xx/connection errors with bounded backoff (unless retry=False)."""
    for attempt, delay in enumerate((*RETRY_DELAYS, None) if retry else (None,)):
        try:
            return fn(*args, **kwargs)
        except (ApiException, DynamicApiError) as exc:
            if getattr(exc, "status", 0) not in errors.RETRY_STATUSES or delay is None:
                raise translate(exc, action) from exc
            logger.warning("%s: HTTP %s, retry %d in %.1fs", action, exc.status, attempt + 1, delay)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            if delay is None:
                raise translate(exc, action) from exc
            logger.warning("%s: %s, retry %d in %.1fs", action, exc, attempt + 1, delay)
        time.sleep(delay)
    raise AssertionError("unreachable")


# --- the client -------------------------------------------------------------------------

_local = threading.local()


def api_client() -> client.ApiClient:
    """One ApiClient per thread, from the kubeconfig if set (KUBECONFIG), else the in-cluster service account."""
    api = getattr(_local, "api", None)
    if api is None:
        kubeconfig = settings.PREVIEWS_KUBECONFIG
        try:
            if kubeconfig:
                api = config.new_client_from_config(
                    config_file=kubeconfig, context=settings.PREVIEWS_KUBE_CONTEXT or None
                )
            else:
                configuration = client.Configuration()
                config.load_incluster_config(client_configuration=configuration)
                api = client.ApiClient(configuration)
        except (config.ConfigException, OSError) as exc:
            raise errors.Unavailable(f"no usable Kubernetes configuration: {exc}") from exc
        _local.api = api
    return api


def preload() -> None:
    """Import the client modules the service uses now rather than on first use (see `manage.py qcluster`)."""
    for name in ("ApiClient", "Configuration", "CoreV1Api", "VersionApi", "AuthorizationV1Api", "V1Namespace",
                 "V1DeleteOptions", "V1Preconditions", "V1SelfSubjectAccessReview"):
        getattr(client, name)


def core_api() -> client.CoreV1Api:
    return client.CoreV1Api(api_client())


def discovery() -> dynamic.DynamicClient:
    dyn = getattr(_local, "dynamic", None)
    if dyn is None:
        dyn = call("discover the API", dynamic.DynamicClient, api_client())
        _local.dynamic = dyn
    return dyn


def reset_clients() -> None:
    """Forget this thread's clients (after the kubeconfig changed)."""
    _local.__dict__.clear()


def ping() -> str:
    """The server's version; raises errors.Unavailable (or another GatewayError) unless the API answers us."""
    # No retries: a readiness probe must answer quickly, and the next probe is the retry.
    version = call("check the API", client.VersionApi(api_client()).get_code, retry=False, _request_timeout=(2, 5))
    return version.git_version


LIST_PAGE_SIZE = 500


def resource_for(api_version: str, kind: str) -> dynamic.Resource:
    try:
        return discovery().resources.get(api_version=api_version, kind=kind)
    except ResourceNotFoundError as exc:
        hint = ""
        if api_version.startswith(GATEWAY_GROUP + "/"):
            hint = ("; install the Gateway API CRDs (standard channel) in the cluster, or set the repository's "
                    "routing to ingress")
        raise KindNotServed(f"the cluster does not serve {kind} in {api_version}{hint}", status=404) from exc


CONCURRENCY = 8  # requests one process has in flight at once (applies of a wave, a reaper cycle's deletes)

_pool: tuple[int, ThreadPoolExecutor] | None = None
_pool_lock = threading.Lock()


def map_concurrently(fn: Callable[[T], R], items: list[T]) -> list[R]:
    """`fn` over `items` on a small per-process pool of threads, results in order.

    Every call finishes before this returns; if some raised, the first in `items` order is raised. The
    pool's threads live as long as the process, so each builds its API client once (clients are per
    thread); a new pool follows a fork (django-q forks its workers, and threads do not survive a fork).
    """
    global _pool
    if len(items) <= 1:
        return [fn(item) for item in items]
    with _pool_lock:
        if _pool is None or _pool[0] != os.getpid():
            _pool = (os.getpid(), ThreadPoolExecutor(CONCURRENCY, thread_name_prefix="kube"))
        pool = _pool[1]
    futures = [pool.submit(fn, item) for item in items]
    for future in futures:
        future.exception()  # wait for all of them
    return [future.result() for future in futures]
