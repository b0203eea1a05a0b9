"""Every API error is application/problem+json (RFC 9457) with a per-field `errors` list."""

from __future__ import annotations

from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, HttpResponse, JsonResponse
from django.views import csrf as django_csrf
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions, status
from rest_framework.response import Response

from previews.services import PreviewConflict, RateLimited

PROBLEM_CONTENT_TYPE = "application/problem+json"

TITLES = {
    400: "Malformed request",
    401: "Authentication required",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    406: "Not acceptable",
    409: "Conflict",
    413: "Request body too large",
    415: "Unsupported media type",
    422: "Invalid values",
    429: "Too many requests",
    500: "Internal error",
    503: "Service unavailable",
}


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "the request body is too large"


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "the request conflicts with the preview's current state"


class InvalidValues(exceptions.APIException):
    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    default_detail = "some values are invalid"

    def __init__(self, errors: list[dict], detail: str | None = None):
        super().__init__(detail or "; ".join(f"{e['field']}: {e['message']}" for e in errors))
        self.errors = errors


def problem(status_code: int, detail: str, errors: list[dict] | None = None) -> dict:
    body = {"type": "about:blank", "title": TITLES.get(status_code, "Error"), "status": status_code,
            "detail": detail}
    if errors:
        body["errors"] = errors
    return body


def problem_response(status_code: int, detail: str, errors: list[dict] | None = None) -> JsonResponse:
    """For plain Django views (the webhook, health checks)."""
    return JsonResponse(problem(status_code, detail, errors), status=status_code, content_type=PROBLEM_CONTENT_TYPE)


def flatten(detail, prefix: str = "") -> list[dict]:
    """DRF's nested error detail -> [{"field": "images[0].reference", "message": "..."}]."""
    if isinstance(detail, dict):
        out = []
        for key, value in detail.items():
            if isinstance(key, int):  # a ListSerializer's errors, keyed by item index
                field = f"{prefix}[{key}]"
            else:
                name = "" if key in ("non_field_errors", "__all__") else str(key)
                field = f"{prefix}.{name}" if prefix and name else (prefix or name)
            out.extend(flatten(value, field))
        return out
    if isinstance(detail, list):
        if all(isinstance(item, str) for item in detail):
            return [{"field": prefix or None, "message": str(item)} for item in detail]
        out = []
        for i, item in enumerate(detail):
            if item:
                out.extend(flatten(item, f"{prefix}[{i}]"))
        return out
    return [{"field": prefix or None, "message": str(detail)}]


@csrf_exempt  # nothing here acts; a PUT to no endpoint is a 404, not a CSRF refusal
def api_not_found(request, unmatched: str = "") -> JsonResponse:
    """Any /api/ path that matches no route: a problem, like every other API answer."""
    return problem_response(404, f"no API endpoint at {request.path[:200]}; see /api/schema/")


def csrf_failure(request, reason: str = "") -> HttpResponse:
    """CSRF_FAILURE_VIEW: under /api/ a problem+json (the API is token-authenticated, the dashboard's forms are
    not), elsewhere Django's own page."""
    if request.path.startswith("/api/"):
        return problem_response(403, f"CSRF check failed ({reason[:100]}): the API takes a token in the "
                                     "Authorization header, not a browser session")
    return django_csrf.csrf_failure(request, reason=reason)


def problem_exception_handler(exc, context):
    if isinstance(exc, RequestDataTooBig):
        exc = PayloadTooLarge()
    if isinstance(exc, Http404):
        exc = exceptions.NotFound(str(exc) or "not found")
    if isinstance(exc, DjangoValidationError):
        errors = flatten(exc.message_dict if hasattr(exc, "error_dict") else exc.messages)
        exc = InvalidValues(errors)
    if isinstance(exc, exceptions.ValidationError):
        exc = InvalidValues(flatten(exc.detail))
    if isinstance(exc, PreviewConflict):
        exc = Conflict(str(exc))
    if isinstance(exc, RateLimited):
        exc = exceptions.Throttled(wait=exc.retry_after, detail=str(exc))
    if not isinstance(exc, exceptions.APIException):
        return None  # a real bug: let Django log it and answer 500
    errors = getattr(exc, "errors", None)
    detail = exc.detail if isinstance(exc.detail, str) else "; ".join(
        f"{e['field']}: {e['message']}" if e["field"] else e["message"] for e in flatten(exc.detail))
    headers = {}
    if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
        headers["WWW-Authenticate"] = 'Bearer realm="previews"'
    if getattr(exc, "wait", None):
        headers["Retry-After"] = str(int(exc.wait))
    return Response(problem(exc.status_code, str(detail), errors), status=exc.status_code, headers=headers,
                    content_type=PROBLEM_CONTENT_TYPE)
