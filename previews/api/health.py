"""Liveness and readiness probes."""

from __future__ import annotations

from django.db import DatabaseError, connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

from previews import selectors
from previews.gateways import errors, kube


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    checks: dict[str, str] = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = "ok"
    except DatabaseError as exc:
        checks["database"] = f"error: {exc.__class__.__name__}"
    try:
        checks["kubernetes"] = f"ok ({kube.ping()})"
    except errors.GatewayError as exc:
        checks["kubernetes"] = f"error: {exc}"
    ready = all(v.startswith("ok") for v in checks.values())
    # The watcher is reported, not required: web serves (and tasks apply) while it restarts.
    return JsonResponse({"status": "ready" if ready else "not ready", "checks": checks,
                         "watcher": selectors.watcher_summary()}, status=200 if ready else 503)
