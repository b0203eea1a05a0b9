"""The cluster watcher as a real process, with a real qcluster, on the real control plane."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import yaml
from django.test import override_settings
from django_q.models import OrmQ
from kubernetes import client

from previews import provisioning, services
from previews.engine import sweep
from previews.gateways import kube
from previews.models import Preview, Repository, WatcherStatus
from previews.services import Actor, PreviewRequest
from tests.conftest import ROOT, namespace_exists, start_service, stop_service, wait_until

pytestmark = [pytest.mark.kube, pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
CI = Actor("token", "ci")


def request(repository: Repository, pr: int, delay: str = "", sha: str = "a" * 40) -> Preview:
    docs = list(yaml.safe_load_all(repository.manifest_template))
    if delay:
        docs[1]["spec"]["template"]["metadata"].setdefault("annotations", {})["previews.local/start-delay"] = delay
    return services.preview_upsert(repository=repository, pr_number=pr, actor=CI, request=PreviewRequest(
        head_sha=sha, manifests=yaml.safe_dump_all(docs))).preview


def statuses(previews: list[Preview]) -> list[str]:
    by_id = dict(Preview.objects.filter(pk__in=[p.pk for p in previews]).values_list("pk", "status"))
    return [by_id[p.pk] for p in previews]


def test_a_watcher_killed_mid_rollout_is_restarted_and_every_preview_converges(preview_repo, qcluster,
                                                                               kubeconfig_path):
    watcher = start_service(["watch_cluster"], kubeconfig_path, "watcher-test.log")
    previews = [request(preview_repo, pr, delay="6s") for pr in (1, 2, 3)]
    wait_until(lambda: all(p.applied_generation for p in Preview.objects.filter(pk__in=[p.pk for p in previews])),
               timeout=60, message="the deploys to be applied")
    os.killpg(watcher.pid, signal.SIGKILL)
    watcher.wait()
    watcher.log.close()
    time.sleep(7)  # the rollouts finish while no watcher runs
    assert statuses(previews) == ["deploying"] * 3

    restarted = start_service(["watch_cluster"], kubeconfig_path, "watcher-test.log")
    try:
        wait_until(lambda: statuses(previews) == ["ready"] * 3, timeout=60,
                   message="the restarted watcher to find the finished rollouts")
    finally:
        stop_service(restarted)


def test_a_second_watcher_stands_by_while_the_first_leads(kubeconfig_path, cluster_watcher):
    second = start_service(["watch_cluster"], kubeconfig_path, "watcher-test-2.log")
    try:
        wait_until(lambda: WatcherStatus.objects.filter(is_leader=False, connected=False).exists()
                   and WatcherStatus.objects.filter(is_leader=True, connected=True).exists(),
                   timeout=30, message="one leader and one standby")
        assert WatcherStatus.objects.filter(is_leader=True).count() == 1
    finally:
        stop_service(second)


def test_the_watcher_stops_within_seconds_of_sigterm(kubeconfig_path):
    proc = start_service(["watch_cluster"], kubeconfig_path, "watcher-test.log")
    wait_until(lambda: WatcherStatus.objects.filter(is_leader=True, connected=True).exists(), timeout=30,
               message="the watcher to lead")
    started = time.monotonic()
    proc.terminate()
    assert proc.wait(timeout=10) == 0
    proc.log.close()
    assert time.monotonic() - started < 5
    assert WatcherStatus.objects.get().detail == "stopped"


def test_a_deploy_that_finds_the_api_unreachable_waits_and_is_retried_never_failed(preview_repo, settings,
                                                                                  tmp_path):
    preview = request(preview_repo, 5)
    unreachable = tmp_path / "kubeconfig"
    unreachable.write_text(re.sub(r"server: https://[^:/]+:\d+", "server: https://127.0.0.1:1",
                                  Path(settings.PREVIEWS_KUBECONFIG).read_text()))
    settings.PREVIEWS_KUBECONFIG = str(unreachable)
    kube.reset_clients()
    with override_settings(PREVIEWS_DEPLOY_RETRY_SECONDS=1):
        assert provisioning.deploy(preview.pk, preview.generation) == "retry"
    preview.refresh_from_db()
    assert preview.status == "pending"
    assert preview.status_message.startswith("The Kubernetes API is unreachable; the deploy is tried again in 1s")
    assert preview.deploy_queued_at is None and preview.next_attempt_at is not None
    time.sleep(1.1)
    assert services.deploy_slots_fill(preview_repo.pk) == 1  # queued again once its retry time has come
    assert Preview.objects.get(pk=preview.pk).deploy_queued_at is not None


def test_an_api_server_restart_during_rollouts_loses_no_event(preview_repo, engine, kubeconfig_path):
    previews = [request(preview_repo, pr, delay="4s") for pr in (21, 22, 23)]
    wait_until(lambda: all(p.applied_generation for p in Preview.objects.filter(pk__in=[p.pk for p in previews])),
               timeout=60, message="the deploys to be applied")
    state = Path(kubeconfig_path).parent
    pid = int((state / "pids" / "kube-apiserver.pid").read_text())
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
               .lower(), timeout=30, message="the API server to stop")
    time.sleep(3)
    subprocess.run([str(ROOT / "scripts" / "kube"), "up"], check=True, capture_output=True)
    wait_until(lambda: statuses(previews) == ["ready"] * 3, timeout=90, message="every preview to become ready")
    assert not Preview.objects.filter(pk__in=[p.pk for p in previews], events__action="deploy failed").exists()


def test_one_repository_flooding_the_queue_does_not_hold_up_another(preview_repo, engine):
    preview_repo.max_live_previews = 100
    preview_repo.manifest_puts_per_minute = 0  # 50 PUTs with manifests in a moment: the flood this test is about
    preview_repo.save()
    other = Repository.objects.create(owner="acme", name=f"other-{uuid.uuid4().hex[:6]}",
                                      base_domain="preview.example.com",
                                      namespace_prefix=f"{preview_repo.namespace_prefix}o",
                                      manifest_template=preview_repo.manifest_template)
    flood = [request(preview_repo, pr) for pr in range(100, 150)]
    assert Preview.objects.filter(repository=preview_repo, deploy_queued_at__isnull=False).count() <= 4
    time.sleep(1)
    asked = time.monotonic()
    single = request(other, 1)
    wait_until(lambda: Preview.objects.get(pk=single.pk).applied_generation == 1, timeout=60,
               message="the other repository's deploy to be applied")
    waited = time.monotonic() - asked
    remaining = Preview.objects.filter(repository=preview_repo, applied_generation=0).count()
    print(f"the other repository's deploy was applied {waited:.1f}s after it was asked for, "
          f"with {remaining} of the flood's 50 still to apply")
    assert waited < 10
    assert remaining > 10  # the flood was still going on
    wait_until(lambda: statuses(flood) == ["ready"] * 50, timeout=240, message="the whole flood to be ready")


def test_the_sweep_marks_a_deletion_the_watcher_missed_and_fails_an_overdue_rollout(preview_repo, kube_api,
                                                                                    settings):
    gone = request(preview_repo, 31)
    services.preview_destroy(preview=gone, actor=CI, reason="PR closed")  # no namespace ever existed
    overdue = request(preview_repo, 32, delay="10m")
    assert provisioning.deploy(overdue.pk, overdue.generation) == "applied"
    Preview.objects.filter(pk=overdue.pk).update(applied_at=overdue.created_at.replace(year=2020))
    done = sweep.sweep()
    assert done["deleted"] == 1 and done["timed_out"] == 1
    assert Preview.objects.get(pk=gone.pk).status == "deleted"
    failed = Preview.objects.get(pk=overdue.pk)
    assert failed.status == "failed"
    timeout = settings.PREVIEWS_ROLLOUT_TIMEOUT
    assert failed.status_message.startswith(f"not ready after {timeout}s (found by the sweep)")
    assert namespace_exists(client.CoreV1Api(kube_api), overdue.namespace)


def test_the_sweep_queues_again_a_deploy_whose_task_was_lost(preview_repo, settings):
    preview = request(preview_repo, 41)
    OrmQ.objects.all().delete()  # its task was never written (the database went away after the commit)
    Preview.objects.filter(pk=preview.pk).update(deploy_queued_at=preview.created_at.replace(year=2020))
    done = sweep.sweep()
    assert done["requeued"] == 1  # and it has its slot again at once (the lost deploy is the oldest waiting)
    preview.refresh_from_db()
    assert preview.deploy_queued_at.year > 2020
    assert preview.events.filter(action="deploy requeued").exists()


def test_the_sweep_keeps_only_the_newest_successful_task_results(settings):
    # django-q2's own pruning is off (it loads every kept result per finished task): the sweep prunes.
    from datetime import timedelta

    from django.utils import timezone
    from django_q.models import Task

    settings.PREVIEWS_TASK_RESULTS_KEPT = 3
    start = timezone.now() - timedelta(hours=1)

    def task(minute: int, success: bool) -> str:
        task_id = uuid.uuid4().hex
        Task.objects.create(id=task_id, name=f"t{minute}", func="previews.tasks.sweep", success=success,
                            started=start + timedelta(minutes=minute), stopped=start + timedelta(minutes=minute))
        return task_id

    successes = [task(minute, True) for minute in range(6)]
    failures = [task(minute, False) for minute in range(2)]
    assert sweep.sweep()["task_results_pruned"] == 3
    assert set(Task.objects.values_list("id", flat=True)) == set(successes[3:]) | set(failures)
    assert sweep.sweep()["task_results_pruned"] == 0
