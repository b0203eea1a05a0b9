"""One record of what the service knows of a pull request, and event actions checked by the database.

- `PullRequestState` becomes `PullRequest`, with what GitHub's own `head:<repo>:<pr>` rows in `GitHubState`
  held (the known head, when it was seen, the earlier heads) and the head repository, GitHub's answer when
  asked, and the state as a checked vocabulary. The `head:` rows are carried into it and removed, so
  `GitHubState` holds only the gateway's transport cache (ETags, rate limit, back-off).
- `PreviewEvent.action` is made to fit its vocabulary, for 0014's check constraint: the one action an earlier
  version wrote that is not in it ("delete slow": a namespace still terminating) is carried as "namespace
  terminating", any other unknown one as "updated", each keeping the original in `details.recorded_action`.
"""

from django.db import migrations, models

ACTIONS = [
    "created", "updated", "reopened", "redeploy requested", "destroy requested", "data reset requested",
    "extended", "pinned", "unpinned", "sleep requested", "wake requested", "command", "reaped", "marked deleted",
    "expiry warning", "namespace stuck", "deploy started", "deploy waiting", "deploy requeued", "data created",
    "data reset", "applied", "pruned", "woken", "ready", "deploy failed", "slept", "sleep failed", "data dropped",
    "data drop failed", "data reaped", "namespace terminating", "delete failed", "deleted", "github failed",
]
LEGACY_ACTIONS = {"delete slow": "namespace terminating"}
EARLIER_HEADS_KEPT = 50


def carry_heads(apps, schema_editor):
    """GitHubState rows `head:<owner/name, lower-case>:<number>` -> the PullRequest of that repository and PR."""
    GitHubState = apps.get_model("previews", "GitHubState")
    PullRequest = apps.get_model("previews", "PullRequest")
    Repository = apps.get_model("previews", "Repository")
    repositories = {f"{r.owner}/{r.name}".lower(): r for r in Repository.objects.all()}
    for row in GitHubState.objects.filter(key__startswith="head:"):
        full_name, _, number = row.key[len("head:"):].rpartition(":")
        repository = repositories.get(full_name)
        sha = (row.data or {}).get("sha", "")
        if repository is not None and number.isdecimal() and sha and row.until is not None:
            pull, _ = PullRequest.objects.get_or_create(repository=repository, pr_number=int(number))
            pull.head_sha, pull.head_seen_at = sha, row.until
            pull.earlier_heads = [s for s in (row.data or {}).get("earlier", []) if s != sha][-EARLIER_HEADS_KEPT:]
            pull.save(update_fields=["head_sha", "head_seen_at", "earlier_heads"])
        row.delete()


def carry_actions(apps, schema_editor):
    PreviewEvent = apps.get_model("previews", "PreviewEvent")
    for event in PreviewEvent.objects.exclude(action__in=ACTIONS).iterator():
        event.details = {**(event.details or {}), "recorded_action": event.action}
        event.action = LEGACY_ACTIONS.get(event.action, "updated")
        event.save(update_fields=["action", "details"])


class Migration(migrations.Migration):

    dependencies = [
        ("previews", "0012_code_health"),
    ]

    operations = [
        migrations.RemoveConstraint(model_name="pullrequeststate", name="pullrequeststate_unique_repository_pr"),
        migrations.RemoveConstraint(model_name="pullrequeststate", name="pullrequeststate_opt_valid"),
        migrations.RenameModel(old_name="PullRequestState", new_name="PullRequest"),
        migrations.AlterField(
            model_name="pullrequest",
            name="state",
            field=models.CharField(choices=[("open", "Open"), ("closed", "Closed"), ("merged", "Merged")],
                                   default="open", max_length=8),
        ),
        migrations.AlterField(
            model_name="pullrequest",
            name="command_opt",
            field=models.CharField(blank=True, choices=[("", "none"), ("in", "opted in by /preview"),
                                                        ("out", "opted out by /preview delete")],
                                   default="", max_length=3),
        ),
        migrations.AddField(
            model_name="pullrequest",
            name="head_repository",
            field=models.CharField(blank=True, help_text="owner/name of the branch's repository; empty: GitHub did "
                                                         "not say", max_length=140),
        ),
        migrations.AddField(
            model_name="pullrequest", name="head_seen_at", field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="pullrequest", name="earlier_heads", field=models.JSONField(blank=True, default=list),
        ),
        migrations.AddField(
            model_name="pullrequest", name="asked_at", field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="pullrequest",
            name="asked_known",
            field=models.BooleanField(default=False, help_text="GitHub answered when last asked"),
        ),
        migrations.AddConstraint(
            model_name="pullrequest",
            constraint=models.UniqueConstraint(models.F("repository"), models.F("pr_number"),
                                               name="pullrequest_unique_repository_pr"),
        ),
        migrations.AddConstraint(
            model_name="pullrequest",
            constraint=models.CheckConstraint(condition=models.Q(("state__in", ["open", "closed", "merged"])),
                                              name="pullrequest_state_valid"),
        ),
        migrations.AddConstraint(
            model_name="pullrequest",
            constraint=models.CheckConstraint(condition=models.Q(("command_opt__in", ["", "in", "out"])),
                                              name="pullrequest_command_opt_valid"),
        ),
        migrations.RunPython(carry_heads, migrations.RunPython.noop),
        # The constraint itself is 0014's: Postgres refuses to alter a table in the transaction that updated it
        # while its deferred foreign-key checks are pending.
        migrations.RunPython(carry_actions, migrations.RunPython.noop),
    ]
