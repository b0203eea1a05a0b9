"""Where a preview is reached: its host and URL in the cluster, its dashboard page and its API resources.

The one home of these rules: hosts are `<namespace>.<base domain>`, and every link to the service's
own pages is built by `reverse()` from the URL names, so a route that moves moves its links too.
"""

from __future__ import annotations

from django.conf import settings
from django.urls import reverse

from previews.models import Preview, Repository


def namespace_for(repository: Repository, pr_number: int) -> str:
    return f"{repository.namespace_prefix}-{pr_number}"


def preview_host(repository: Repository, namespace: str) -> str:
    return f"{namespace}.{repository.base_domain}"


def preview_url(repository: Repository, namespace: str) -> str:
    port = settings.PREVIEWS_PREVIEW_URL_PORT
    origin = f"{settings.PREVIEWS_PREVIEW_URL_SCHEME}://{preview_host(repository, namespace)}"
    return f"{origin}:{port}" if port else origin


def dashboard_url(preview: Preview) -> str:
    """The preview's page on the dashboard, absolute (it is shown on GitHub)."""
    return settings.PREVIEWS_PUBLIC_URL + reverse("dashboard:preview_detail", args=[preview.pk])


def api_path(name: str, repository: Repository, pr_number: int) -> str:
    """The path of one of a preview's API resources (`preview-detail`, `preview-extend`, ...)."""
    return reverse(name, kwargs={"owner": repository.owner, "repo": repository.name, "pr": str(pr_number)})


def api_links(preview: Preview) -> dict[str, str]:
    """The `links` of a preview in the API."""
    repository = preview.repository
    return {"self": api_path("preview-detail", repository, preview.pr_number), "dashboard": dashboard_url(preview),
            "extend": api_path("preview-extend", repository, preview.pr_number),
            "reset_data": api_path("preview-reset-data", repository, preview.pr_number)}
