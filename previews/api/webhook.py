"""The GitHub webhook's endpoint: the signature checked with the repository's secret, then the delivery handled."""

from __future__ import annotations

import hashlib
import json

from django.core.exceptions import ValidationError
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from previews import payloads, selectors, services, webhooks
from previews.api.errors import problem_response


@csrf_exempt
@require_POST
def github_webhook(request: HttpRequest) -> JsonResponse:
    body = request.body
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        payload = None
    # The secret depends on the repository the delivery names (its own, or the global one), so the body is
    # read first; nothing in it is acted on before the signature matches.
    repository = None
    if isinstance(payload, dict) and (full_name := payloads.repository_full_name(payload)):
        owner, _, name = full_name.partition("/")
        repository = selectors.repository_get(owner, name)
    secret = webhooks.secret_for(repository)
    if not secret:
        return problem_response(503, "the webhook is not configured (GITHUB_WEBHOOK_SECRET is empty)")
    signature = request.headers.get("X-Hub-Signature-256")
    if not signature:
        return problem_response(401, "the X-Hub-Signature-256 header is missing")
    if not payloads.verify_signature(secret, body, signature):
        return problem_response(403, "the signature does not match the body")
    delivery = request.headers.get("X-GitHub-Delivery", "")
    event = request.headers.get("X-GitHub-Event", "")
    if not delivery or not event:
        return problem_response(400, "X-GitHub-Delivery and X-GitHub-Event headers are required")
    if payload is None:
        return problem_response(400, "the body is not valid JSON (or nested too deeply)")
    if not isinstance(payload, dict):
        return problem_response(400, "the body is not a JSON object")
    try:
        outcome = webhooks.handle_event(event=event, delivery_id=delivery[:100], payload=payload,
                                        repository=repository, body_sha256=hashlib.sha256(body).hexdigest())
    except payloads.PayloadError as exc:
        return problem_response(400, f"the payload is not a GitHub {event[:50]} event: {exc}",
                                [{"field": exc.field, "message": str(exc).split(": ", 1)[1]}])
    except ValidationError as exc:
        return problem_response(422, "the pull request cannot be deployed: " + "; ".join(exc.messages))
    except services.PreviewConflict as exc:
        return problem_response(409, str(exc))
    return JsonResponse({"delivery": delivery[:100], "outcome": outcome}, status=202)
