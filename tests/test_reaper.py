"""The reaper on the real control plane, with the fake GitHub for open PRs."""

import uuid
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone
from kubernetes import client

from previews import provisioning, reaper, reaper_cycle, services
from previews.models import Preview, ReaperRun
from previews.services import Actor, PreviewRequest
from tests.conftest import namespace_exists, wait_until

pytestmark = pytest.mark.kube
CI = Actor("token", "ci")
MANAGED = {"app.kubernetes.io/managed-by": "pr-previews"}


def exists(core: client.CoreV1Api, name: str) -> bool:
    try:
        return core.read_namespace(name).status.phase == "Active"
    except client.ApiException as exc:
        if exc.status == 404:
            return False
        raise


def deployed(repository, pr: int) -> Preview:
    preview = services.preview_upsert(repository=repository, pr_number=pr, actor=CI, request=PreviewRequest(
        head_sha="a" * 40, images=(f"ghcr.io/demo/shop:pr-{pr}",))).preview
    assert provisioning.deploy(preview.pk, preview.generation) == "ready"
    return Preview.objects.get(pk=preview.pk)


def scoped_cycle(prefix: str, *, dry_run=False, now=None, before_execute=None):
    """One cycle over this test's own namespaces only (other tests may leave managed ones behind)."""
    snapshot = reaper_cycle.take_snapshot()
    snapshot.namespaces = [n for n in snapshot.namespaces if n.name.startswith(prefix)]
    snapshot.previews = [p for p in snapshot.previews if p.namespace.startswith(prefix)]
    the_plan = reaper.plan(snapshot.namespaces, snapshot.previews, snapshot.open_prs, now or timezone.now(),
                           reaper_cycle.reaper_settings())
    if before_execute:
        before_execute(the_plan)
    return reaper_cycle.execute(the_plan, snapshot, dry_run=dry_run)


@pytest.fixture
def orphans(kube_env, make_namespace):
    """Managed-labelled namespaces that no preview owns, under one prefix; cleaned up afterwards."""
    prefix = f"o{uuid.uuid4().hex[:6]}"
    made: list[str] = []

    def make(count: int) -> list[str]:
        made.extend(make_namespace(prefix, labels=MANAGED) for _ in range(count))
        return list(made)

    make.prefix = prefix
    return make


def test_a_closed_prs_namespace_is_deleted_and_its_record_marked_deleted(preview_repo, fake_github, kube_api):
    fake_github.add_pull(preview_repo.full_name, 1)
    fake_github.add_pull(preview_repo.full_name, 2)
    closed, kept = deployed(preview_repo, 1), deployed(preview_repo, 2)
    fake_github.close_pull(preview_repo.full_name, 1, merged=True)

    result = scoped_cycle(preview_repo.namespace_prefix)
    decisions = {d.namespace: (d.action, d.reason) for d in result.plan.decisions}
    assert decisions[closed.namespace] == (reaper.DELETE, reaper.PR_CLOSED)
    assert decisions[kept.namespace] == (reaper.KEEP, reaper.PR_OPEN)
    closed.refresh_from_db()
    assert closed.desired == "down"
    assert closed.events.filter(action="destroy requested", actor_kind="reaper").exists()
    # The teardown task the reaper enqueued, run here as the worker would.
    assert provisioning.teardown(closed.pk, closed.generation) == "deleted"
    core = client.CoreV1Api(kube_api)
    assert not exists(core, closed.namespace) and exists(core, kept.namespace)
    assert Preview.objects.get(pk=closed.pk).status == "deleted"


def test_github_being_down_deletes_nothing_for_being_closed(preview_repo, fake_github, kube_api):
    fake_github.add_pull(preview_repo.full_name, 3, state="closed")
    preview = deployed(preview_repo, 3)
    fake_github.fail_next(100, status=502)
    result = scoped_cycle(preview_repo.namespace_prefix)
    assert [(d.action, d.reason) for d in result.plan.decisions] == [(reaper.KEEP, reaper.PR_UNKNOWN)]
    assert exists(client.CoreV1Api(kube_api), preview.namespace)
    assert preview_repo.full_name in result.snapshot.github_reasons


def test_an_unlabelled_pr_99_and_a_labelled_staging_are_untouched(kube_env, kube_api, db, fake_github):
    core = client.CoreV1Api(kube_api)
    for name, labels in (("pr-99", None), ("staging", MANAGED)):
        if not exists(core, name):
            core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=labels)))
    try:
        result = reaper_cycle.run_cycle(now=timezone.now() + timedelta(days=30))
        assert "pr-99" not in {d.namespace for d in result.plan.decisions}
        staging = [d for d in result.plan.decisions if d.namespace == "staging"]
        assert [(d.action, d.reason) for d in staging] == [(reaper.KEEP, reaper.PROTECTED)]
        assert exists(core, "pr-99") and exists(core, "staging")
    finally:
        for name in ("pr-99", "staging"):
            core.delete_namespace(name)


def test_a_dry_run_deletes_nothing_but_records_the_plan(orphans, db, kube_api):
    names = orphans(2)
    result = scoped_cycle(orphans.prefix, dry_run=True, now=timezone.now() + timedelta(hours=2))
    assert {d.action for d in result.plan.decisions} == {reaper.DELETE}
    assert result.done == []
    assert all(exists(client.CoreV1Api(kube_api), n) for n in names)
    run = ReaperRun.objects.get(pk=result.run.pk)
    assert run.dry_run and len(run.decisions) == 2


def test_old_orphans_are_deleted_and_young_ones_kept(orphans, db, kube_api):
    names = orphans(2)
    young = scoped_cycle(orphans.prefix)
    assert {d.reason for d in young.plan.decisions} == {reaper.WITHIN_GRACE}
    old = scoped_cycle(orphans.prefix, now=timezone.now() + timedelta(hours=2))
    assert [(d.action, d.reason) for d in old.plan.decisions] == [(reaper.DELETE, reaper.ORPHAN)] * 2
    assert len(old.done) == 2 and all(line.startswith("delete ") for line in old.done)
    core = client.CoreV1Api(kube_api)
    wait_until(lambda: not any(exists(core, n) for n in names), timeout=120, message="orphans to go")


def test_the_cap_limits_deletions_per_cycle(orphans, db, kube_api, settings):
    settings.PREVIEWS_REAPER_MAX_DELETIONS = 2
    settings.PREVIEWS_REAPER_BREAKER_MIN_DELETIONS = 100
    names = orphans(5)
    result = scoped_cycle(orphans.prefix, now=timezone.now() + timedelta(hours=2))
    assert len(result.plan.deletions) == 2 and len(result.done) == 2
    assert sum(d.reason == reaper.CAPPED for d in result.plan.decisions) == 3
    core = client.CoreV1Api(kube_api)
    assert sum(exists(core, n) for n in names) == 3


def test_the_circuit_breaker_deletes_nothing_and_raises_an_alert(orphans, db, kube_api, settings):
    settings.PREVIEWS_REAPER_BREAKER_MIN_DELETIONS = 3
    names = orphans(4)
    result = scoped_cycle(orphans.prefix, now=timezone.now() + timedelta(hours=2))
    assert result.plan.deletions == [] and result.done == []
    assert "circuit breaker: 4 of 4" in ReaperRun.objects.get(pk=result.run.pk).alert
    assert all(exists(client.CoreV1Api(kube_api), n) for n in names)


def test_one_failing_delete_does_not_stop_the_others(orphans, db, kube_api):
    names = orphans(3)
    core = client.CoreV1Api(kube_api)

    def recreate_the_second(the_plan):
        # Between plan and execution, the second namespace is replaced by a new one of the same name:
        # its UID no longer matches the plan's, so deleting it must fail, and only it.
        core.delete_namespace(names[1])
        wait_until(lambda: not namespace_exists(core, names[1]), timeout=120, message="the namespace to go")
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=names[1], labels=MANAGED)))

    result = scoped_cycle(orphans.prefix, now=timezone.now() + timedelta(hours=2),
                          before_execute=recreate_the_second)
    assert len(result.errors) == 1 and names[1] in result.errors[0] and "recreated" in result.errors[0]
    assert len(result.done) == 2
    assert exists(core, names[1])
    wait_until(lambda: not namespace_exists(core, names[0]) and not namespace_exists(core, names[2]), timeout=120,
               message="the other two to go")


def test_a_ready_preview_whose_namespace_vanished_is_marked_deleted(preview_repo, fake_github, kube_api):
    fake_github.add_pull(preview_repo.full_name, 4)
    preview = deployed(preview_repo, 4)
    core = client.CoreV1Api(kube_api)
    core.delete_namespace(preview.namespace)
    wait_until(lambda: not namespace_exists(core, preview.namespace), timeout=120, message="the namespace to go")
    result = scoped_cycle(preview_repo.namespace_prefix)
    assert [(d.action, d.reason) for d in result.plan.decisions] == [(reaper.MARK_DELETED, reaper.NAMESPACE_GONE)]
    preview.refresh_from_db()
    assert preview.status == "deleted"
    assert preview.events.filter(action="marked deleted", actor_kind="reaper").exists()


def test_the_reap_command_prints_the_plan_and_changes_nothing_in_dry_run(orphans, db, kube_api, capsys):
    names = orphans(1)
    call_command("reap", "--dry-run")
    out = capsys.readouterr().out
    assert "Reaper plan (dry run: nothing is changed)" in out
    assert names[0] in out and reaper.WITHIN_GRACE in out
    assert exists(client.CoreV1Api(kube_api), names[0])


def test_the_reap_command_prints_json(orphans, db, capsys):
    import json

    orphans(1)
    call_command("reap", "--dry-run", "--json")
    data = json.loads(capsys.readouterr().out)
    assert data["dry_run"] is True and any(d["reason"] == reaper.WITHIN_GRACE for d in data["decisions"])


def test_the_reaper_schedule_is_created_once(db):
    from django_q.models import Schedule

    call_command("ensure_schedules")
    call_command("ensure_schedules")
    [schedule] = Schedule.objects.filter(name="reaper")
    assert schedule.func == "previews.tasks.reap" and schedule.minutes == 5
