"""The reaper on the real control plane, with the fake GitHub for open PRs."""

import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone
from kubernetes import client

from previews import provisioning, reaper, reaper_cycle, services
from previews.gateways import kube
from previews.manifests import REPOSITORY_LABEL
from previews.models import Preview, PreviewEvent, ReaperRun
from previews.services import Actor, PreviewRequest
from tests.conftest import TEST_NAMESPACE_LABEL, namespace_exists, wait_until

pytestmark = pytest.mark.kube
CI = Actor("token", "ci")
MANAGED = {"app.kubernetes.io/managed-by": "pr-previews"}
# The mass-expiry test's size (the 1000 by default; smaller while others share the cluster's namespace
# controller, which deletes a few namespaces at a time).
MASS_EXPIRY = int(os.environ.get("PREVIEWS_TEST_MASS_EXPIRY", "1000"))


def exists(core: client.CoreV1Api, name: str) -> bool:
    try:
        return core.read_namespace(name).status.phase == "Active"
    except client.ApiException as exc:
        if exc.status == 404:
            return False
        raise


def deployed(repository, pr: int, watcher) -> Preview:
    preview = services.preview_upsert(repository=repository, pr_number=pr, actor=CI, request=PreviewRequest(
        head_sha="a" * 40, images=(f"localhost/previews-sample:pr-{pr}",))).preview
    assert provisioning.deploy(preview.pk, preview.generation) == "applied"
    watcher.status_of(preview, "ready")
    return Preview.objects.get(pk=preview.pk)


def scoped_cycle(prefix: str, *, dry_run=False, now=None, before_execute=None):
    """One cycle over this test's own namespaces only (other tests may leave managed ones behind).

    `now` is the service's clock: set ahead, it disagrees with the database's and the API server's.
    """
    now = now or timezone.now()
    snapshot = reaper_cycle.take_snapshot()
    snapshot.namespaces = [n for n in snapshot.namespaces if n.name.startswith(prefix)]
    snapshot.previews = [p for p in snapshot.previews if p.namespace.startswith(prefix)]
    the_plan = reaper_cycle.decide(snapshot, now)
    if before_execute:
        before_execute(the_plan)
    return reaper_cycle.execute(the_plan, snapshot, dry_run=dry_run, now=now)


def ready_previews(repository, kube_api, count: int, *, expires_in: timedelta) -> list[Preview]:
    """`count` ready previews of `repository` with their namespaces (labelled as a deploy labels them), fast."""
    now = timezone.now()
    prefix = repository.namespace_prefix
    Preview.objects.bulk_create([
        Preview(repository=repository, pr_number=n, namespace=f"{prefix}-{n}", url=f"https://{prefix}-{n}.example.com",
                head_sha="a" * 40, status=Preview.Status.READY, generation=1, observed_generation=1,
                expires_at=now + expires_in, ready_at=now)
        for n in range(1, count + 1)], batch_size=500)
    core = client.CoreV1Api(kube_api)
    labels = {**MANAGED, REPOSITORY_LABEL: str(repository.pk), TEST_NAMESPACE_LABEL: "1"}

    def create(n: int) -> None:
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=f"{prefix}-{n}", labels=labels)))

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(create, range(1, count + 1)))
    return list(Preview.objects.filter(repository=repository).order_by("pr_number"))


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


def test_a_closed_prs_namespace_is_deleted_and_its_record_marked_deleted(preview_repo, fake_github, kube_api,
                                                                         watcher):
    fake_github.add_pull(preview_repo.full_name, 1)
    fake_github.add_pull(preview_repo.full_name, 2)
    closed, kept = deployed(preview_repo, 1, watcher), deployed(preview_repo, 2, watcher)
    fake_github.close_pull(preview_repo.full_name, 1, merged=True)

    result = scoped_cycle(preview_repo.namespace_prefix)
    decisions = {d.namespace: (d.action, d.reason) for d in result.plan.decisions}
    assert decisions[closed.namespace] == (reaper.DELETE, reaper.PR_CLOSED)
    assert decisions[kept.namespace] == (reaper.KEEP, reaper.PR_OPEN)
    closed.refresh_from_db()
    assert closed.desired == "down"
    assert closed.events.filter(action="destroy requested", actor_kind="reaper").exists()
    # The teardown task the reaper enqueued, run here as the worker would; the watcher sees the namespace go.
    assert provisioning.teardown(closed.pk, closed.generation) == "terminating"
    watcher.status_of(closed, "deleted", timeout=120)
    core = client.CoreV1Api(kube_api)
    assert not exists(core, closed.namespace) and exists(core, kept.namespace)


def test_github_being_down_deletes_nothing_for_being_closed(preview_repo, fake_github, kube_api, watcher):
    fake_github.add_pull(preview_repo.full_name, 3, state="closed")
    preview = deployed(preview_repo, 3, watcher)
    fake_github.fail_next(100, status=502)
    result = scoped_cycle(preview_repo.namespace_prefix)
    assert [(d.action, d.reason) for d in result.plan.decisions] == [(reaper.KEEP, reaper.PR_UNKNOWN)]
    assert exists(client.CoreV1Api(kube_api), preview.namespace)
    assert preview_repo.full_name in result.snapshot.github_reasons


def test_an_unlabelled_namespace_and_a_labelled_protected_one_are_untouched(orphans, make_namespace, kube_api, db,
                                                                           settings):
    """Like `pr-99` without our label and `staging` with it: a real cycle, a month on, touches neither.

    Both are this test's own (a protected name of its own, added to the protected list), so the real
    `staging` and `pr-99` of a shared cluster are never at risk.
    """
    core = client.CoreV1Api(kube_api)
    unlabelled = make_namespace(orphans.prefix)  # no managed-by label
    [protected] = orphans(1)
    settings.PREVIEWS_PROTECTED_NAMESPACES = [*settings.PREVIEWS_PROTECTED_NAMESPACES, protected]
    result = scoped_cycle(orphans.prefix, now=timezone.now() + timedelta(days=30))
    assert unlabelled not in {d.namespace for d in result.plan.decisions}
    assert [(d.action, d.reason) for d in result.plan.decisions] == [(reaper.KEEP, reaper.PROTECTED)]
    assert exists(core, unlabelled) and exists(core, protected)


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
    wait_until(lambda: not any(exists(core, n) for n in names), timeout=600, message="orphans to go")


def test_the_rate_limit_spreads_deletions_over_cycles(orphans, db, kube_api, settings):
    settings.PREVIEWS_REAPER_DELETIONS_PER_MINUTE = 2
    settings.PREVIEWS_REAPER_INTERVAL_MINUTES = 1  # so a cycle may spend at most 2
    settings.PREVIEWS_REAPER_BREAKER_MIN_DELETIONS = 100
    names = orphans(5)
    later = timezone.now() + timedelta(hours=2)
    core = client.CoreV1Api(kube_api)

    first = scoped_cycle(orphans.prefix, now=later)
    assert len(first.plan.deletions) == 2 and len(first.done) == 2
    assert sum(d.reason == reaper.RATE_LIMITED for d in first.plan.decisions) == 3
    assert sum(exists(core, n) for n in names) == 3
    # Right after: the allowance is spent, nothing more goes.
    again = scoped_cycle(orphans.prefix, now=later + timedelta(seconds=5))
    assert again.plan.deletions == [] and sum(d.reason == reaper.RATE_LIMITED for d in again.plan.decisions) == 3
    # A minute on, two more.
    minute_on = scoped_cycle(orphans.prefix, now=later + timedelta(minutes=1, seconds=5))
    assert len(minute_on.plan.deletions) == 2
    assert sum(exists(core, n) for n in names) == 1
    assert ReaperRun.objects.get(pk=minute_on.run.pk).summary["allowance"]["left"] == pytest.approx(0.0, abs=0.2)


def test_the_circuit_breaker_deletes_nothing_and_raises_an_alert(orphans, db, kube_api, settings):
    settings.PREVIEWS_REAPER_BREAKER_MIN_DELETIONS = 3
    names = orphans(4)
    result = scoped_cycle(orphans.prefix, now=timezone.now() + timedelta(hours=2))
    assert result.plan.deletions == [] and result.done == []
    run = ReaperRun.objects.get(pk=result.run.pk)
    assert "circuit breaker: 4 of 4" in run.alert and run.summary["breaker_tripped"] is True
    assert all(exists(client.CoreV1Api(kube_api), n) for n in names)


def test_the_breaker_trips_when_github_reports_most_prs_closed_at_once(preview_repo, fake_github, kube_api):
    previews = ready_previews(preview_repo, kube_api, 6, expires_in=timedelta(days=2))
    for preview in previews:
        fake_github.add_pull(preview_repo.full_name, preview.pr_number, state="closed")
    result = scoped_cycle(preview_repo.namespace_prefix)
    assert result.plan.deletions == [] and result.plan.breaker_tripped
    assert {(d.reason, d.detail) for d in result.plan.decisions} == {(reaper.BREAKER, "would delete: PR closed")}
    assert "circuit breaker: 6 of 6" in ReaperRun.objects.get(pk=result.run.pk).alert
    assert not Preview.objects.filter(repository=preview_repo, desired=Preview.Desired.DOWN).exists()
    core = client.CoreV1Api(kube_api)
    assert all(exists(core, p.namespace) for p in previews)


def namespace_states(core: client.CoreV1Api, prefix: str) -> dict[str, bool]:
    """{name: terminating} of the namespaces under `prefix` (one list call)."""
    return {ns.metadata.name: ns.metadata.deletion_timestamp is not None for ns in core.list_namespace().items
            if ns.metadata.name.startswith(prefix + "-")}


# The namespace controller deletes a few namespaces at a time: the 1000 take it 3-5 minutes on 2 busy
# cores, beyond the suite's default timeout of 5.
@pytest.mark.timeout(900)
def test_a_mass_expiry_is_all_deleted_under_the_default_settings(preview_repo, kube_api, watcher):
    # The watcher's first list must predate nothing of this test's: a list taken before the namespaces exist,
    # processed after their previews are deleting, would count them gone (it reads a fresh list as the truth).
    watcher.until(lambda: watcher.watcher.synced, timeout=60, message="the watcher to list every kind")
    previews = ready_previews(preview_repo, kube_api, MASS_EXPIRY, expires_in=-timedelta(hours=1))
    core = client.CoreV1Api(kube_api)
    started = time.monotonic()
    result = scoped_cycle(preview_repo.namespace_prefix)
    seconds = time.monotonic() - started
    run = ReaperRun.objects.get(pk=result.run.pk)
    assert not run.alert and not result.plan.breaker_tripped and not result.plan.expiry_paused
    assert run.summary["by_reason"][reaper.DELETE] == {reaper.EXPIRED: MASS_EXPIRY}
    assert len(result.done) == MASS_EXPIRY and result.errors == []
    # Every preview is on its way down through the service, with its event...
    assert Preview.objects.filter(repository=preview_repo, desired=Preview.Desired.DOWN,
                                  status=Preview.Status.DELETING).count() == MASS_EXPIRY
    assert PreviewEvent.objects.filter(preview__repository=preview_repo, action="destroy requested",
                                       actor_kind="reaper").count() == MASS_EXPIRY
    # ...and the cycle itself issued every namespace delete: none is left to a task.
    states = namespace_states(core, preview_repo.namespace_prefix)
    assert all(states.values()), f"{sum(not t for t in states.values())} namespaces not terminating"
    assert PreviewEvent.objects.filter(preview__repository=preview_repo, action="namespace terminating",
                                       actor_kind="reaper").count() == MASS_EXPIRY
    # Issued, not waited for: the cycle is back long before a namespace controller could delete them all.
    assert seconds < 60, f"the cycle took {seconds:.1f}s"
    # kube_calls is what the listing really took: at least a page of 500 per 500 managed namespaces.
    assert run.summary["kube_calls"] >= -(-run.summary["managed_namespaces"] // kube.LIST_PAGE_SIZE) >= 1
    # The namespace controller finishes them; the watcher records each preview deleted.
    ids = [p.pk for p in previews]
    watcher.until(lambda: Preview.objects.filter(pk__in=ids, status=Preview.Status.DELETED).count() == MASS_EXPIRY,
                  timeout=1800, message=f"all {MASS_EXPIRY} previews to be recorded deleted")
    assert namespace_states(core, preview_repo.namespace_prefix) == {}


def test_a_reaped_preview_is_deleted_by_the_cycle_and_its_pr_told_by_a_real_worker(preview_repo, fake_github,
                                                                                   kube_api, engine):
    """With a real qcluster and the real watcher: the cycle issues the deletes, no teardown task runs, the PR
    is told in a batched task, and the watcher records the end (then the PR is told that too)."""
    from django_q.models import Task

    previews = ready_previews(preview_repo, kube_api, 3, expires_in=-timedelta(hours=1))
    for preview in previews:
        fake_github.add_pull(preview_repo.full_name, preview.pr_number)
    result = scoped_cycle(preview_repo.namespace_prefix)
    assert sorted(result.done) == sorted(f"delete {p.namespace}: terminating" for p in previews)
    ids = [p.pk for p in previews]
    wait_until(lambda: Preview.objects.filter(pk__in=ids, status=Preview.Status.DELETED).count() == 3, timeout=600,
               message="the watcher to record the previews deleted")

    def told() -> bool:
        return all(any("Preview deleted" in c["body"] for c in fake_github.comments(preview_repo.full_name, n))
                   for n in (p.pr_number for p in previews))

    wait_until(told, timeout=60, message="every PR to be told its preview was deleted")
    assert Task.objects.filter(func=services.GITHUB_SYNC_MANY_TASK, success=True).exists()
    assert not Task.objects.filter(func=services.TEARDOWN_TASK).exists()
    for preview in Preview.objects.filter(pk__in=ids):
        actions = list(preview.events.order_by("created_at", "id").values_list("action", flat=True))
        assert actions[:2] == ["destroy requested", "namespace terminating"] and "deleted" in actions


def test_the_rate_limit_spreads_a_mass_over_cycles_most_urgent_first(preview_repo, fake_github, kube_api, settings):
    settings.PREVIEWS_REAPER_DELETIONS_PER_MINUTE = 2
    settings.PREVIEWS_REAPER_INTERVAL_MINUTES = 1  # so a cycle may spend at most 2
    previews = ready_previews(preview_repo, kube_api, 6, expires_in=timedelta(days=2))
    now = timezone.now()
    # PR 1 closed (the most urgent reason); 2-5 expired 1 to 4 hours ago (longest expired first); 6 open, live.
    for preview in previews:
        fake_github.add_pull(preview_repo.full_name, preview.pr_number,
                             state="closed" if preview.pr_number == 1 else "open")
    for preview, hours in zip(previews[1:5], (1, 4, 2, 3), strict=True):
        Preview.objects.filter(pk=preview.pk).update(expires_at=now - timedelta(hours=hours))
    core = client.CoreV1Api(kube_api)
    prefix = preview_repo.namespace_prefix

    def terminating() -> set[int]:
        return {int(name.rsplit("-", 1)[1]) for name, t in namespace_states(core, prefix).items() if t}

    first = scoped_cycle(prefix, now=now)
    assert sorted(d.namespace for d in first.plan.deletions) == [f"{prefix}-1", f"{prefix}-3"]
    assert terminating() == {1, 3}
    assert scoped_cycle(prefix, now=now + timedelta(seconds=5)).plan.deletions == []
    scoped_cycle(prefix, now=now + timedelta(minutes=1, seconds=5))
    assert terminating() == {1, 3, 5, 4}
    scoped_cycle(prefix, now=now + timedelta(minutes=2, seconds=10))
    assert terminating() == {1, 2, 3, 4, 5}
    assert Preview.objects.get(pk=previews[5].pk).desired == Preview.Desired.UP


def test_a_namespace_changed_since_the_listing_is_read_then_deleted_only_if_still_ours(preview_repo, kube_api):
    previews = ready_previews(preview_repo, kube_api, 3, expires_in=-timedelta(hours=1))
    relabelled, unlabelled, unchanged = (p.namespace for p in previews)
    core = client.CoreV1Api(kube_api)

    def change(_plan):
        # Between the listing and the deletes: one is re-applied (still ours), one loses our label.
        core.patch_namespace(relabelled, {"metadata": {"annotations": {"previews.dev/head-sha": "b" * 40}}})
        core.patch_namespace(unlabelled, {"metadata": {"labels": {"app.kubernetes.io/managed-by": None}}})

    result = scoped_cycle(preview_repo.namespace_prefix, before_execute=change)
    assert result.errors == []
    states = namespace_states(core, preview_repo.namespace_prefix)
    assert states[relabelled] and states[unchanged] and not states[unlabelled]
    gone = Preview.objects.get(pk=previews[1].pk)
    assert gone.status == Preview.Status.DELETED and "not managed by this service" in gone.status_message


def test_a_preview_a_task_holds_gets_its_teardown_task_instead_and_one_with_data_too(preview_repo, kube_api):
    import psycopg
    from django.conf import settings as django_settings

    from previews import locks

    busy, with_data, plain = ready_previews(preview_repo, kube_api, 3, expires_in=-timedelta(hours=1))
    Preview.objects.filter(pk=with_data.pk).update(data_name=f"pv_{preview_repo.namespace_prefix}_2")
    db = django_settings.DATABASES["default"]
    # Another session (a deploy task, say) holds the busy preview's lock while the cycle runs.
    with psycopg.connect(host=db["HOST"], port=db["PORT"], user=db["USER"], dbname=db["NAME"]) as other:
        other.execute("SELECT pg_advisory_lock(%s, %s)", [locks.DEPLOY, busy.pk])
        result = scoped_cycle(preview_repo.namespace_prefix)
    assert sorted(result.done) == sorted([f"delete {busy.namespace}: teardown requested (a task was busy with it)",
                                          f"delete {with_data.namespace}: teardown requested",
                                          f"delete {plain.namespace}: terminating"])
    states = namespace_states(client.CoreV1Api(kube_api), preview_repo.namespace_prefix)
    assert states == {busy.namespace: False, with_data.namespace: False, plain.namespace: True}
    # Both are down and wait for their teardown tasks, which a worker runs as here (the data's mode is not set
    # in this test, so there is nothing to drop).
    for preview in (busy, with_data):
        preview.refresh_from_db()
        assert (preview.desired, preview.status) == (Preview.Desired.DOWN, Preview.Status.DELETING)
        assert provisioning.teardown(preview.pk, preview.generation) == "terminating"
    assert all(namespace_states(client.CoreV1Api(kube_api), preview_repo.namespace_prefix).values())


def test_a_service_clock_ahead_of_the_databases_pauses_expiry_with_an_alert(preview_repo, kube_api):
    previews = ready_previews(preview_repo, kube_api, 3, expires_in=timedelta(hours=1))
    # The service believes it is two hours later than the database and the API server do: expired, to it.
    result = scoped_cycle(preview_repo.namespace_prefix, now=timezone.now() + timedelta(hours=2))
    assert result.plan.deletions == [] and result.done == []
    assert {(d.reason, d.detail) for d in result.plan.decisions} == {(reaper.CLOCKS_DISAGREE, "would delete: expired")}
    run = ReaperRun.objects.get(pk=result.run.pk)
    assert run.alert.startswith("clock check: the service's clock is ") and "expiry deletions are paused" in run.alert
    assert run.summary["expiry_paused"] is True
    # The other two clocks were really read: the database's and the API server's `Date`, both about now.
    for name in ("database", "api_server"):
        assert abs(getattr(result.snapshot.clocks, name) - timezone.now()) < timedelta(minutes=1)
    assert not Preview.objects.filter(repository=preview_repo, desired=Preview.Desired.DOWN).exists()
    core = client.CoreV1Api(kube_api)
    assert all(exists(core, p.namespace) for p in previews)


def test_one_failing_delete_does_not_stop_the_others(orphans, db, kube_api):
    names = orphans(3)
    core = client.CoreV1Api(kube_api)

    def recreate_the_second(the_plan):
        # Between plan and execution, the second namespace is replaced by a new one of the same name:
        # its UID no longer matches the plan's, so deleting it must fail, and only it.
        core.delete_namespace(names[1])
        wait_until(lambda: not namespace_exists(core, names[1]), timeout=600, message="the namespace to go")
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=names[1], labels=MANAGED)))

    result = scoped_cycle(orphans.prefix, now=timezone.now() + timedelta(hours=2),
                          before_execute=recreate_the_second)
    assert len(result.errors) == 1 and names[1] in result.errors[0] and "recreated" in result.errors[0]
    assert len(result.done) == 2
    assert exists(core, names[1])
    wait_until(lambda: not namespace_exists(core, names[0]) and not namespace_exists(core, names[2]), timeout=600,
               message="the other two to go")


def test_a_ready_preview_whose_namespace_vanished_is_marked_deleted(preview_repo, fake_github, kube_api, watcher):
    fake_github.add_pull(preview_repo.full_name, 4)
    preview = deployed(preview_repo, 4, watcher)
    core = client.CoreV1Api(kube_api)
    core.delete_namespace(preview.namespace)
    wait_until(lambda: not namespace_exists(core, preview.namespace), timeout=600, message="the namespace to go")
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
