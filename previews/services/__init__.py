"""State changes. Each public function is one transaction and one story.

The package's public names, each defined once in the module named below:

- `timeline`: `Actor` and the events of a preview's timeline;
- `errors`: `PreviewConflict`, `StaleCommit`, `RateLimited`;
- `queue`: tasks enqueued after commit, a repository's deploy slots, old task results;
- `github_sync`: telling the PR (sync tasks) and what it was last told;
- `tokens`: static API tokens;
- `pull_requests`: what is known of a pull request, and the one way to ask GitHub about it;
- `upsert`: CI's and the webhook's request for a PR's preview;
- `actions`: redeploy, destroy, reset data, extend, pin, sleep, wake, PR commands;
- `progress`: what the engine's tasks, the watcher and the sweep record;
- `reaping`: the reaper's changes.
"""

from previews.services.actions import (
    preview_destroy,
    preview_extend,
    preview_pin,
    preview_record_command,
    preview_redeploy,
    preview_reset_data,
    preview_sleep,
    preview_wake,
)
from previews.services.errors import PreviewConflict, RateLimited, StaleCommit
from previews.services.github_sync import (
    GITHUB_SYNC_BATCH,
    GITHUB_SYNC_MANY_TASK,
    GITHUB_SYNC_TASK,
    github_sync_enqueue,
    github_sync_enqueue_many,
    github_sync_retry,
    preview_github_recorded,
    preview_github_sync_failed,
    preview_github_synced,
)
from previews.services.progress import (
    MAX_STATUS_MESSAGE,
    NamespaceGone,
    TeardownIssued,
    TeardownOutcome,
    preview_data_dropped,
    preview_data_measured,
    preview_data_named,
    preview_data_prepared,
    preview_data_salted,
    preview_deploy_applied,
    preview_deploy_started,
    preview_deploy_wait,
    preview_deploys_recover_lost,
    preview_namespace_gone,
    preview_note,
    preview_rollout_finished,
    preview_set_status,
    preview_sleep_retry,
    preview_slept,
    preview_teardown_retry,
    previews_teardown_issued,
)
from previews.services.pull_requests import (
    PullRequestFacts,
    head_for_deploy,
    opt_in_refusal,
    pull_origin,
    pull_request_get,
    pull_request_record,
    pull_request_set_opt,
    stale_request_reason,
)
from previews.services.queue import DEPLOY_TASK, SLEEP_TASK, TEARDOWN_TASK, deploy_slots_fill, task_results_prune
from previews.services.reaping import (
    REAP_CHUNK,
    Reaped,
    preview_mark_gone,
    preview_note_stuck,
    preview_warn_expiry,
    previews_reap,
)
from previews.services.timeline import REAPER, Actor
from previews.services.tokens import TOKEN_CACHE, TokenCache, token_authenticate, token_create, token_revoke
from previews.services.upsert import (
    PreviewRequest,
    TouchResult,
    UpsertResult,
    preview_touch_by_name,
    preview_upsert,
)

__all__ = [
    "DEPLOY_TASK",
    "GITHUB_SYNC_BATCH",
    "GITHUB_SYNC_MANY_TASK",
    "GITHUB_SYNC_TASK",
    "MAX_STATUS_MESSAGE",
    "REAPER",
    "REAP_CHUNK",
    "SLEEP_TASK",
    "TEARDOWN_TASK",
    "TOKEN_CACHE",
    "Actor",
    "NamespaceGone",
    "PreviewConflict",
    "PreviewRequest",
    "PullRequestFacts",
    "RateLimited",
    "Reaped",
    "StaleCommit",
    "TeardownIssued",
    "TeardownOutcome",
    "TokenCache",
    "TouchResult",
    "UpsertResult",
    "deploy_slots_fill",
    "github_sync_enqueue",
    "github_sync_enqueue_many",
    "github_sync_retry",
    "head_for_deploy",
    "opt_in_refusal",
    "preview_data_dropped",
    "preview_data_measured",
    "preview_data_named",
    "preview_data_prepared",
    "preview_data_salted",
    "preview_deploy_applied",
    "preview_deploy_started",
    "preview_deploy_wait",
    "preview_deploys_recover_lost",
    "preview_destroy",
    "preview_extend",
    "preview_github_recorded",
    "preview_github_sync_failed",
    "preview_github_synced",
    "preview_mark_gone",
    "preview_namespace_gone",
    "preview_note",
    "preview_note_stuck",
    "preview_pin",
    "preview_record_command",
    "preview_redeploy",
    "preview_reset_data",
    "preview_rollout_finished",
    "preview_set_status",
    "preview_sleep",
    "preview_sleep_retry",
    "preview_slept",
    "preview_teardown_retry",
    "preview_touch_by_name",
    "preview_upsert",
    "preview_wake",
    "preview_warn_expiry",
    "previews_reap",
    "previews_teardown_issued",
    "pull_origin",
    "pull_request_get",
    "pull_request_record",
    "pull_request_set_opt",
    "stale_request_reason",
    "task_results_prune",
    "token_authenticate",
    "token_create",
    "token_revoke",
]
