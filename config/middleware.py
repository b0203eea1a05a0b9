"""Middleware: a request id for every request (echoed and logged), request timing for /metrics, and a 503
problem (not a 500) while the database is away."""

from __future__ import annotations

import logging
import re
import sys
import time
import uuid

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults

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


# How long a client is told to wait before asking again while the database is away (a restart or a managed
# failover takes seconds to a minute).
DATABASE_RETRY_AFTER_SECONDS = 5
logger = logging.getLogger(__name__)


def database_unavailable() -> JsonResponse:
    """503 problem+json with Retry-After: what every request gets while the service's database is away."""
    response = JsonResponse({"type": "about:blank", "title": "Service unavailable", "status": 503,
                             "detail": "the service's database is unreachable for the moment; try again in a few "
                                       "seconds (nothing was changed if the request did not say otherwise)"},
                            status=503, content_type="application/problem+json")
    response["Retry-After"] = str(DATABASE_RETRY_AFTER_SECONDS)
    return response


class DatabaseUnavailableMiddleware:
    """A view that meets a database outage (OperationalError, InterfaceError: a restart, a failover, a broken
    connection) answers 503 problem+json instead of a 500; Django closes the broken connection at the end of the
    request, and the next request connects again. (Middleware that meets it before the view is answered the same
    by `server_error`, the 500 handler.)"""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, OperationalError | InterfaceError):
            logger.warning("database unavailable during %s %s: %s", request.method, request.path, exception)
            return database_unavailable()
        return None


def server_error(request: HttpRequest) -> HttpResponse:
    """handler500: a database outage met anywhere in the request (middleware included) is a 503 problem."""
    if isinstance(sys.exc_info()[1], OperationalError | InterfaceError):
        return database_unavailable()
    return defaults.server_error(request)
