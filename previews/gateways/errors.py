"""The errors of every gateway to an outside system (Kubernetes, GitHub, the preview data server).

One base and a subclass per meaning, as in kopf's `_cogs/clients/errors.py`, so
callers catch what they can act on instead of comparing status numbers:

- `GatewayError`: the outside system failed or refused; the message says which and why.
- `NotFound`: the thing asked for does not exist (HTTP 404).
- `Conflict`: it changed under us, or exists and is someone else's (HTTP 409).
- `Gone`: what we held is no longer valid, e.g. a watch's resourceVersion (HTTP 410).
- `Unavailable`: the system could not be asked (unreachable, timed out, rate limited, 429, 5xx):
  the state of things there is unknown, and trying again later is right.

Gateways raise these `from` the client's own exception, so the cause stays chained.
"""

from __future__ import annotations

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class GatewayError(Exception):
    """An outside system failed or refused. `status` is its HTTP status (0 when there was no answer)."""

    def __init__(self, message: str, *, status: int = 0, reason: str = "", retry_after: int | None = None):
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.retry_after = retry_after  # seconds the system asked us to wait, when it said


class NotFound(GatewayError):
    """It does not exist (HTTP 404)."""


class Conflict(GatewayError):
    """It changed since it was read, or exists and is not ours (HTTP 409)."""


class Gone(GatewayError):
    """What we held is no longer valid, e.g. a watch's resource version expired (HTTP 410)."""


class Unavailable(GatewayError):
    """The system could not be asked or kept failing: unknown state, try again later."""


def for_status(status: int) -> type[GatewayError]:
    """The class that means what an HTTP status means (0: no answer at all)."""
    if status == 0 or status in RETRY_STATUSES:
        return Unavailable
    return {404: NotFound, 409: Conflict, 410: Gone}.get(status, GatewayError)
