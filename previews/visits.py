"""What a person sees at a preview's URL when its app does not answer there: the route controller's
fallback (every host of a repository's base domain that no route claims) is this service.

A preview asleep says so and offers to wake it; one being deployed or woken says so and reloads itself
once the app answers; a failed one says where to look; a host with no preview answers 404. Requests for
the service's own pages pass through untouched: only a host `<namespace>.<base domain>` of a known
repository is served here, before Django's host checks (the base domains are data, not settings).

Nothing here sets a cookie or trusts the Host header beyond finding the preview: the pages link only to
their own host's paths and to PREVIEWS_PUBLIC_URL. The wake button needs no CSRF token: waking is what
opening the URL does on other services (Okteto), it is idempotent, and a preview that is awake ignores it.
"""

from __future__ import annotations

import logging

from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string

from previews import links, selectors, services
from previews.models import ActorKind, Preview

logger = logging.getLogger(__name__)

WAKE_PATH = "/_previews/wake"
# Set on every fallback answer, so the "waking up" page can tell it from the app's (or the controller's) own.
FALLBACK_HEADER = "X-Previews-Fallback"


def visit_state(preview: Preview | None) -> str:
    """Which page a preview's host shows: asleep, starting, failed, gone (pure)."""
    if preview is None or preview.desired == Preview.Desired.DOWN:
        return "gone"
    if preview.status == Preview.Status.SLEEPING:
        return "asleep" if preview.slept_at else "falling-asleep"
    if preview.status == Preview.Status.FAILED:
        return "failed"
    return "starting"  # pending, deploying, or ready with the controller not routing it yet


STATUS_CODES = {"gone": 404, "asleep": 503, "falling-asleep": 503, "failed": 503, "starting": 503}


class PreviewHostMiddleware:
    """Answers for preview hosts (first in MIDDLEWARE); everything else goes on to the service."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        found = selectors.preview_for_host(request.META.get("HTTP_HOST", ""))
        if found is None:
            return self.get_response(request)
        return visit(request, *found)


def visit(request: HttpRequest, namespace: str, preview: Preview | None) -> HttpResponse:
    if request.method == "POST" and request.path == WAKE_PATH:
        return _wake(preview)
    if request.method not in ("GET", "HEAD"):
        return _page("gone" if preview is None else visit_state(preview), namespace, preview, status=405)
    return _page(visit_state(preview), namespace, preview)


def _wake(preview: Preview | None) -> HttpResponse:
    if preview is not None and visit_state(preview) == "asleep":
        try:
            services.preview_wake(preview=preview, actor=services.Actor(ActorKind.VISITOR, "its URL"))
        except services.PreviewConflict as exc:
            logger.info("a visitor's wake of %s was refused: %s", preview, exc)
    response = HttpResponse(status=303)
    response["Location"] = "/"
    response[FALLBACK_HEADER] = "wake"
    return response


def _page(state: str, namespace: str, preview: Preview | None, status: int | None = None) -> HttpResponse:
    context = {"state": state, "namespace": namespace, "preview": preview, "wake_path": WAKE_PATH,
               "dashboard_url": links.dashboard_url(preview) if preview is not None else "",
               "fallback_header": FALLBACK_HEADER}
    response = HttpResponse(render_to_string("previews/visit.html", context), status=status or STATUS_CODES[state])
    response[FALLBACK_HEADER] = state
    response["Cache-Control"] = "no-store"
    # What SecurityMiddleware and XFrameOptionsMiddleware would add: these pages are answered before them.
    response["X-Content-Type-Options"] = "nosniff"
    response["Referrer-Policy"] = "same-origin"
    response["X-Frame-Options"] = "DENY"
    if response.status_code == 503:
        response["Retry-After"] = "5"
    return response
