"""Telling the pull request: sync tasks queued after commit, and what the PR was last told."""

from __future__ import annotations

from datetime import timedelta

from django.db import transaction
from django.utils import timezone
from django_q.models import Schedule
from django_q.tasks import async_task, schedule

from previews.gateways import github
from previews.models import GITHUB_SYNC_FAILED, Preview

GITHUB_SYNC_TASK = "previews.tasks.sync_github"
GITHUB_SYNC_MANY_TASK = "previews.tasks.sync_github_many"
GITHUB_SYNC_BATCH = 50  # previews per batched sync task (a mass deletion queues 20 tasks per 1000, not 1000)


def github_sync_enqueue(preview_id: int, expiry_warning: bool = False) -> None:
    """Tell the PR about the preview's state, after commit, in a task of its own."""
    if github.is_configured():
        transaction.on_commit(lambda: async_task(GITHUB_SYNC_TASK, preview_id, expiry_warning,
                                                 task_name=f"sync_github:{preview_id}"))


def github_sync_enqueue_many(preview_ids: list[int]) -> None:
    """Tell many PRs, after commit, in tasks of GITHUB_SYNC_BATCH previews each (each one synced as alone)."""
    ids = sorted(set(preview_ids))
    if not ids or not github.is_configured():
        return
    batches = [ids[i:i + GITHUB_SYNC_BATCH] for i in range(0, len(ids), GITHUB_SYNC_BATCH)]

    def enqueue_batches() -> None:
        for batch in batches:
            async_task(GITHUB_SYNC_MANY_TASK, batch, task_name=f"sync_github_many:{batch[0]}:{len(batch)}")

    transaction.on_commit(enqueue_batches)


def github_sync_retry(preview_id: int, delay: timedelta) -> None:
    """A one-off retry of the GitHub sync after `delay` (the reaper also retries every cycle)."""
    schedule(GITHUB_SYNC_TASK, preview_id, name=f"github-retry-{preview_id}-{timezone.now().timestamp():.0f}",
             schedule_type=Schedule.ONCE, next_run=timezone.now() + delay, repeats=1)


def preview_github_recorded(*, preview_id: int, **fields) -> None:
    """What the PR now shows of the preview: its comment's id, its deployment's id, generation and state."""
    allowed = {"github_comment_id", "github_deployment_id", "github_deployment_generation", "github_deployment_state"}
    if not fields or set(fields) - allowed:
        raise ValueError(f"only {sorted(allowed)} are recorded here, not {sorted(set(fields) - allowed)}")
    Preview.objects.filter(pk=preview_id).update(**fields)


def preview_github_synced(*, preview_id: int, key: str) -> None:
    """The PR shows the state `key` stands for (`notifications.sync_key`)."""
    Preview.objects.filter(pk=preview_id).update(github_synced_key=key)


def preview_github_sync_failed(*, preview_id: int, delay: timedelta) -> None:
    """The PR could not be told: marked out of sync (every reaper cycle retries those) and retried after `delay`."""
    Preview.objects.filter(pk=preview_id).update(github_synced_key=GITHUB_SYNC_FAILED)
    github_sync_retry(preview_id, delay)
