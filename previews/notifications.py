"""Telling the pull request: one sticky comment and GitHub deployment statuses.

`sync_github` reconciles what the PR shows with the preview's current state.
It runs as its own task, so a GitHub outage never fails or slows a deploy or
a teardown: failures become events and the sync is retried later (a one-off
retry, and every reaper cycle picks up previews that are out of sync).
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime, timedelta

from django.utils import timezone

from previews import links, locks, services
from previews.gateways import errors, github
from previews.models import EventAction, Preview

RETRY_DELAY = timedelta(seconds=60)

# Deployment states in the only order GitHub should ever see them for one deployment.
DEPLOYMENT_RANK = {"": 0, "queued": 1, "in_progress": 2, "success": 3, "failure": 3, "inactive": 4}
STATUS_TO_DEPLOYMENT = {
    Preview.Status.PENDING: "queued",
    Preview.Status.DEPLOYING: "in_progress",
    Preview.Status.READY: "success",
    Preview.Status.FAILED: "failure",
    Preview.Status.DELETED: "inactive",
}
HEADLINES = {
    Preview.Status.PENDING: "🟡 Preview queued",
    Preview.Status.DEPLOYING: "🔵 Preview deploying",
    Preview.Status.READY: "🟢 Preview ready",
    Preview.Status.FAILED: "🔴 Preview failed",
    Preview.Status.DELETING: "⚪ Preview being deleted",
    Preview.Status.DELETED: "⚪ Preview deleted",
    Preview.Status.SLEEPING: "💤 Preview sleeping",
}



def fenced(text: str) -> list[str]:
    """A Markdown code block that text (a container's log, say: anything a PR's code prints) cannot close:
    its fence is longer than any run of backticks inside."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return [fence, text, fence]

def plain(text: str) -> str:
    """One line of text shown as itself in Markdown: every character that could start markup (a code fence,
    emphasis, a link, HTML, a table cell) backslash-escaped, as CommonMark allows for ASCII punctuation."""
    escaped = re.sub(r"([\\`*_\[\]<>|~])", r"\\\1", " ".join(text.split()))
    return "\\" + escaped if escaped[:1] in ("#", "-", "+", ">", "=") else escaped  # no heading, list, quote


def _humanize(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds <= 0:
        return "now"
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    if days:
        return f"{days} day{'s' * (days != 1)}" + (f" {hours} h" if hours else "")
    if hours:
        return f"{hours} h {rest // 60} min"
    return f"{max(1, rest // 60)} min"


def comment_body(preview: Preview, now: datetime, expiry_warning: bool = False) -> str:
    """The PR comment for the preview's current state (pure)."""
    status = preview.status
    lines = [f"### {HEADLINES.get(status, status)}", ""]
    if status == Preview.Status.READY:
        lines.append(f"**{preview.url}**")
        lines.append("")
    lines += ["| | |", "| --- | --- |"]
    lines.append(f"| Status | {preview.get_status_display()} |")
    if status not in (Preview.Status.DELETING, Preview.Status.DELETED):
        lines.append(f"| URL | {preview.url} |")
    lines.append(f"| Commit | `{preview.head_sha[:7]}` |")
    lines.append(f"| Namespace | `{preview.namespace}` |")
    if status not in (Preview.Status.DELETING, Preview.Status.DELETED):
        when = f"{preview.expires_at:%Y-%m-%d %H:%M} UTC (in {_humanize(preview.expires_at - now)})"
        if preview.pinned:
            when = "never: pinned"
        lines.append(f"| Expires | {when} |")
    lines.append(f"| Dashboard | {links.dashboard_url(preview)} |")
    if preview.data_name and status not in (Preview.Status.DELETING, Preview.Status.DELETED):
        data = f"{preview.data_mode} `{preview.data_name}`"
        if preview.data_reset_at:
            data += f", last reset {preview.data_reset_at:%Y-%m-%d %H:%M} UTC"
        lines.append(f"| Data | {data} |")
    if status == Preview.Status.FAILED and preview.status_message:
        lines += ["", "**Why it failed**", "", *fenced(preview.status_message[:3000])]
    if status in (Preview.Status.DELETING, Preview.Status.DELETED, Preview.Status.SLEEPING) \
            and preview.status_message:
        lines += ["", plain(preview.status_message[:1000])]
    if status == Preview.Status.SLEEPING:
        lines += ["", "Its workloads are scaled to zero. Comment `/preview wake` (or push) to bring it back."]
    if expiry_warning and status == Preview.Status.READY and not preview.pinned:
        lines += ["", f"⚠️ This preview expires in {_humanize(preview.expires_at - now)}."]
    if status in (Preview.Status.READY, Preview.Status.FAILED, Preview.Status.PENDING, Preview.Status.DEPLOYING):
        repo = preview.repository
        lines += ["", f"Need it longer? Comment `/preview extend 48h`, extend it on the dashboard, or `POST "
                      f"{links.api_path('preview-extend', repo, preview.pr_number)}` with `hours` and "
                      "`reason`. `/preview help` lists the commands."]
        if preview.data_name:
            lines.append(f"Fresh data? Reset it on the dashboard, or `POST "
                         f"{links.api_path('preview-reset-data', repo, preview.pr_number)}`.")
    last = command_line(preview.last_command)
    if last:
        lines += ["", last]
    return "\n".join(lines)


def command_line(last: dict) -> str:
    """The last /preview command and its result, for the sticky comment. Only our own words and a checked
    login are shown: the command is re-rendered from what was parsed, the result is the service's text."""
    if not isinstance(last, dict) or not last.get("command"):
        return ""
    mark = "✅" if last.get("ok") else "❌"
    result = str(last.get("result", "")).replace("`", "'").replace("\n", " ")[:300]
    return f"{mark} `{last['command']}` by @{last.get('user', '')}: {result}"


def sync_key(preview: Preview, expiry_warning: bool = False) -> str:
    """Everything the PR shows; when it changes, the PR needs telling again."""
    raw = "|".join([str(preview.generation), preview.status, preview.status_message, preview.url,
                    preview.expires_at.isoformat(), str(preview.pinned), str(expiry_warning),
                    preview.data_name, str(preview.data_reset_at),
                    str(preview.last_command.get("at", "")) if isinstance(preview.last_command, dict) else ""])
    return hashlib.sha256(raw.encode()).hexdigest()[:40]


def sync_github(preview_id: int, expiry_warning: bool = False) -> str:
    """Bring the PR's comment and deployment status in line with the preview. Returns an outcome word."""
    if not github.is_configured():
        return "disabled"
    with locks.advisory_lock(locks.GITHUB_SYNC, preview_id):
        preview = Preview.objects.select_related("repository").filter(pk=preview_id).first()
        if preview is None:
            return "gone"
        key = sync_key(preview, expiry_warning)
        if preview.github_synced_key == key:
            return "in sync"
        failures: list[errors.GatewayError] = []
        for step in (_sync_deployment, _sync_comment):
            try:
                step(preview, expiry_warning)
            except errors.GatewayError as exc:
                failures.append(exc)
        if failures:
            retry_after = max((e.retry_after or 0 for e in failures), default=0)
            delay = max(RETRY_DELAY, timedelta(seconds=retry_after))
            services.preview_note(preview_id=preview_id, action=EventAction.GITHUB_FAILED,
                                  message="; ".join(str(e) for e in failures) + f"; retrying in {int(delay.seconds)}s",
                                  errors=[str(e) for e in failures])
            services.preview_github_sync_failed(preview_id=preview_id, delay=delay)
            return "failed"
        services.preview_github_synced(preview_id=preview_id, key=key)
        return "synced"


def _sync_deployment(preview: Preview, expiry_warning: bool) -> None:
    repo = preview.repository.full_name
    target = STATUS_TO_DEPLOYMENT.get(preview.status)
    if target is None:  # deleting: the deployment stays as it is until the namespace is gone
        return
    if target == "inactive":
        if preview.github_deployment_id and preview.github_deployment_state != "inactive":
            github.create_deployment_status(repo, preview.github_deployment_id, "inactive",
                                            description="The preview was deleted", log_url=links.dashboard_url(preview))
            _save_deployment(preview, state="inactive")
        return
    if not preview.github_deployment_id or preview.github_deployment_generation != preview.generation:
        deployment = github.create_deployment(repo, preview.head_sha, f"preview/{preview.namespace}",
                                              f"Preview of PR #{preview.pr_number}")
        _save_deployment(preview, deployment_id=deployment.id, generation=preview.generation, state="")
    if DEPLOYMENT_RANK[target] <= DEPLOYMENT_RANK.get(preview.github_deployment_state, 0):
        return  # never post an earlier state after a later one
    description = preview.status_message if target == "failure" else preview.get_status_display()
    github.create_deployment_status(
        repo, preview.github_deployment_id, target, description=description,
        environment_url=preview.url if target == "success" else "", log_url=links.dashboard_url(preview))
    _save_deployment(preview, state=target)


def _save_deployment(preview: Preview, *, state: str, deployment_id: int | None = None,
                     generation: int | None = None) -> None:
    fields = {"github_deployment_state": state}
    if deployment_id is not None:
        fields["github_deployment_id"] = deployment_id
        fields["github_deployment_generation"] = generation
    services.preview_github_recorded(preview_id=preview.pk, **fields)
    for name, value in fields.items():
        setattr(preview, name, value)


def _sync_comment(preview: Preview, expiry_warning: bool) -> None:
    body = comment_body(preview, timezone.now(), expiry_warning)
    comment_id = github.upsert_comment(preview.repository.full_name, preview.pr_number, body,
                                       known_comment_id=preview.github_comment_id)
    if comment_id != preview.github_comment_id:
        services.preview_github_recorded(preview_id=preview.pk, github_comment_id=comment_id)
        preview.github_comment_id = comment_id
