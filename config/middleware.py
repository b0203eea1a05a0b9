"""Middleware: a request id for every request (echoed and logged), and request timing for /metrics."""

from __future__ import annotations

import logging
import re
import time
import uuid

from django.http import HttpRequest, HttpResponse

from config.logs import request_id_var
from previews import metrics

REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
access_logger = logging.getLogger("previews.access")

class RequestIdMiddleware:
    """Takes X-Request-ID from the caller (if sane) or makes one; echoes it; logs and times each request."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        incoming = request.headers.get("X-Request-ID", "")
        request_id = incoming if REQUEST_ID_RE.match(incoming) else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        try:
            response = self.get_response(request)
            elapsed = time.perf_counter() - started
            response["X-Request-ID"] = request_id
            route = getattr(getattr(request, "resolver_match", None), "route", "") or "unmatched"
            metrics.observe_request(request.method, route, response.status_code, elapsed)
            # The path only: query strings and headers (tokens) are never logged.
            access_logger.info("%s %s %s", request.method, request.path, response.status_code, extra={
                "method": request.method, "path": request.path, "status": response.status_code,
                "duration_ms": round(elapsed * 1000, 1)})
            return response
        finally:
            request_id_var.reset(token)
