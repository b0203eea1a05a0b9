"""Small builders for test data; plain functions, no factory library."""

from __future__ import annotations

import itertools
from datetime import timedelta

from django.utils import timezone

from previews.models import Preview, Repository

_counter = itertools.count(1)


def make_repository(**overrides) -> Repository:
    n = next(_counter)
    fields = {"owner": "acme", "name": f"shop{n}", "base_domain": "preview.example.com", **overrides}
    return Repository.objects.create(**fields)


def make_preview(repository: Repository | None = None, **overrides) -> Preview:
    repository = repository or make_repository()
    number = overrides.pop("pr_number", next(_counter))
    fields = {
        "repository": repository,
        "pr_number": number,
        "namespace": f"{repository.namespace_prefix}-{number}-{repository.pk}",
        "head_sha": "a" * 40,
        "expires_at": timezone.now() + timedelta(hours=72),
        **overrides,
    }
    return Preview.objects.create(**fields)
