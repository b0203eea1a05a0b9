"""Migrations that carry existing rows: what an older database holds is still there, in its new shape."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = [("previews", "0012_code_health")]
AFTER = [("previews", "0014_event_action_checked")]


def latest():
    """Every app's newest migration: where each test leaves the database, whatever came after AFTER."""
    executor = MigrationExecutor(connection)
    return executor.loader.graph.leaf_nodes()


def migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


@pytest.mark.django_db(transaction=True)
def test_pull_request_states_and_known_heads_become_one_pull_request_record():
    old = migrate(BEFORE)
    try:
        Repository = old.get_model("previews", "Repository")
        repository = Repository.objects.create(owner="Acme", name="Shop", base_domain="preview.example.com")
        seen = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
        old.get_model("previews", "PullRequestState").objects.create(
            repository=repository, pr_number=7, state="open", draft=True, labels=["preview"], head_sha="b" * 40,
            github_updated_at=seen, command_opt="in")
        GitHubState = old.get_model("previews", "GitHubState")
        GitHubState.objects.create(key="head:acme/shop:7", until=seen, data={"sha": "c" * 40, "earlier": ["b" * 40]})
        GitHubState.objects.create(key="head:acme/shop:8", until=seen, data={"sha": "d" * 40, "earlier": []})
        GitHubState.objects.create(key="head:someone/else:1", until=seen, data={"sha": "e" * 40})
        GitHubState.objects.create(key="rate_limit", data={"remaining": 4321})

        new = migrate(AFTER)
        PullRequest = new.get_model("previews", "PullRequest")
        seven = PullRequest.objects.get(repository_id=repository.pk, pr_number=7)
        assert (seven.state, seven.draft, seven.labels, seven.command_opt) == ("open", True, ["preview"], "in")
        assert (seven.head_sha, seven.head_seen_at, seven.earlier_heads) == ("c" * 40, seen, ["b" * 40])
        eight = PullRequest.objects.get(repository_id=repository.pk, pr_number=8)
        assert (eight.head_sha, eight.head_seen_at, eight.github_updated_at) == ("d" * 40, seen, None)
        assert PullRequest.objects.count() == 2  # a head of a repository not configured here has no home
        # GitHubState is the gateway's transport cache again.
        assert list(new.get_model("previews", "GitHubState").objects.values_list("key", flat=True)) == ["rate_limit"]
    finally:
        migrate(latest())


@pytest.mark.django_db(transaction=True)
def test_event_actions_outside_the_vocabulary_are_carried_and_then_checked():
    old = migrate(BEFORE)
    try:
        repository = old.get_model("previews", "Repository").objects.create(
            owner="acme", name="shop", base_domain="preview.example.com")
        preview = old.get_model("previews", "Preview").objects.create(
            repository=repository, pr_number=1, namespace="pr-1", head_sha="a" * 40,
            expires_at=datetime(2027, 1, 1, tzinfo=UTC))
        Event = old.get_model("previews", "PreviewEvent")
        for action in ("deleted", "delete slow", "something else"):
            Event.objects.create(preview=preview, actor_kind="system", action=action, details={"n": 1})

        new = migrate(AFTER)
        events = new.get_model("previews", "PreviewEvent").objects.order_by("id")
        assert [(e.action, e.details) for e in events] == [
            ("deleted", {"n": 1}),
            ("namespace terminating", {"n": 1, "recorded_action": "delete slow"}),
            ("updated", {"n": 1, "recorded_action": "something else"}),
        ]
        with connection.cursor() as cursor, pytest.raises(Exception, match="event_action_valid"):
            cursor.execute("UPDATE previews_previewevent SET action = 'delete slow'")
    finally:
        migrate(latest())
