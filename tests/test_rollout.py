"""What a rollout's state is, decided from the watcher's summaries (pure, no cluster)."""

import pytest

from previews.engine import rollout
from previews.engine.rollout import NamespaceObjects, State
from previews.engine.watcher import ClusterCache

NS = "pr-1"


def deployment(name="web", generation=2, replicas=2, observed=2, updated=2, ready=2, available=2, total=2,
               conditions=None) -> dict:
    return {"metadata": {"name": name, "namespace": NS, "generation": generation},
            "spec": {"replicas": replicas},
            "status": {"observedGeneration": observed, "replicas": total, "updatedReplicas": updated,
                       "readyReplicas": ready, "availableReplicas": available, "conditions": conditions or []}}


def replicaset(name="web-abc", owner="web", conditions=None) -> dict:
    return {"metadata": {"name": name, "namespace": NS,
                         "ownerReferences": [{"kind": "Deployment", "name": owner, "controller": True}]},
            "status": {"conditions": conditions or []}}


def pod(name="web-abc-1", owner=("ReplicaSet", "web-abc"), waiting=None, unschedulable="", deleting=False) -> dict:
    meta = {"name": name, "namespace": NS,
            "ownerReferences": [{"kind": owner[0], "name": owner[1], "controller": True}]}
    if deleting:
        meta["deletionTimestamp"] = "2026-11-27T00:00:00Z"
    status: dict = {"phase": "Pending"}
    if waiting:
        status["containerStatuses"] = [{"name": "web", "restartCount": 0,
                                        "state": {"waiting": {"reason": waiting, "message": "details"}}}]
    if unschedulable:
        status["conditions"] = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                 "message": unschedulable}]
    return {"metadata": meta, "status": status}


def job(name="migrate", conditions=None) -> dict:
    return {"metadata": {"name": name, "namespace": NS, "generation": 1}, "status": {"conditions": conditions or []}}


def event(name, kind, obj, reason, message) -> dict:
    return {"metadata": {"name": name, "namespace": NS}, "involvedObject": {"kind": kind, "name": obj},
            "reason": reason, "message": message, "type": "Warning", "lastTimestamp": "2026-11-27T00:00:00Z"}


def objects(*items: tuple[str, dict]) -> NamespaceObjects:
    result = NamespaceObjects()
    for kind, obj in items:
        _ns, name, summary = rollout.summarize(kind, obj)
        result.put(kind, name, summary)
    return result


WEB = {"Deployment/web": 2}


def test_a_rolled_out_deployment_is_ready():
    assert rollout.assess(WEB, objects(("Deployment", deployment()))).state == State.READY


@pytest.mark.parametrize("change,pending", [
    ({"observed": 1}, "Deployment web: 2/2 ready"),
    ({"ready": 1, "available": 1}, "Deployment web: 1/2 ready"),
    ({"updated": 1}, "Deployment web: 2/2 ready"),
    ({"total": 3}, "Deployment web: 2/2 ready"),  # an old replica still runs
    ({"generation": 1, "observed": 1}, "Deployment web: not seen yet"),  # the cache predates our apply
], ids=["not-observed", "not-ready", "not-updated", "old-replica-left", "stale-cache"])
def test_a_deployment_that_has_not_finished_is_progressing(change, pending):
    verdict = rollout.assess(WEB, objects(("Deployment", deployment(**change))))
    assert verdict.state == State.PROGRESSING
    assert verdict.pending == [pending]


def test_a_workload_not_seen_yet_is_progressing():
    verdict = rollout.assess(WEB, NamespaceObjects())
    assert (verdict.state, verdict.pending) == (State.PROGRESSING, ["Deployment web: not seen yet"])


def test_a_statefulset_needs_every_replica_updated_and_ready():
    sts = deployment(name="db", ready=1) | {}
    verdict = rollout.assess({"StatefulSet/db": 2}, objects(("StatefulSet", sts)))
    assert verdict.pending == ["StatefulSet db: 1/2 ready"]
    assert rollout.assess({"StatefulSet/db": 2}, objects(("StatefulSet", deployment(name="db")))).state == State.READY


@pytest.mark.parametrize("reason", sorted(rollout.FAILING_WAIT_REASONS))
def test_a_container_waiting_for_a_reason_that_does_not_fix_itself_is_failing(reason):
    verdict = rollout.assess(WEB, objects(("Deployment", deployment(ready=0, available=0)),
                                          ("ReplicaSet", replicaset()), ("Pod", pod(waiting=reason))))
    assert verdict.state == State.FAILING
    assert verdict.reasons == [f"pod web-abc-1 container web is {reason}: details"]


@pytest.mark.parametrize("reason", ["ContainerCreating", "PodInitializing"])
def test_a_container_that_is_still_starting_is_progressing(reason):
    verdict = rollout.assess(WEB, objects(("Deployment", deployment(ready=0, available=0)),
                                          ("ReplicaSet", replicaset()), ("Pod", pod(waiting=reason))))
    assert verdict.state == State.PROGRESSING


def test_an_unschedulable_pod_says_the_cluster_has_no_room():
    message = "0/1 nodes are available: 1 Too many pods. preemption: 0/1 nodes are available."
    verdict = rollout.assess(WEB, objects(("Deployment", deployment(ready=0, available=0)),
                                          ("ReplicaSet", replicaset()), ("Pod", pod(unschedulable=message))))
    assert verdict.state == State.FAILING
    assert verdict.reasons == [f"the cluster has no room: {message}"]


def test_a_pod_unschedulable_for_another_reason_says_so():
    verdict = rollout.assess(WEB, objects(("Deployment", deployment(ready=0, available=0)),
                                          ("ReplicaSet", replicaset()),
                                          ("Pod", pod(unschedulable="0/1 nodes are available: 1 node(s) had taint"))))
    assert verdict.reasons == ["pod web-abc-1 cannot be scheduled: 0/1 nodes are available: 1 node(s) had taint"]


def test_a_quota_refusal_on_the_replicaset_is_failing():
    failure = [{"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
                "message": 'pods "web-abc-x" is forbidden: exceeded quota: preview-quota'}]
    verdict = rollout.assess(WEB, objects(("Deployment", deployment(ready=1, available=1)),
                                          ("ReplicaSet", replicaset(conditions=failure))))
    assert verdict.state == State.FAILING
    assert "exceeded quota" in verdict.reasons[0]


def test_a_failed_create_event_on_a_statefulset_is_failing():
    verdict = rollout.assess({"StatefulSet/db": 1}, objects(
        ("StatefulSet", deployment(name="db", generation=1, observed=1, replicas=1, total=0, ready=0, updated=0)),
        ("Event", event("db.1", "StatefulSet", "db", "FailedCreate", "violates PodSecurity \"baseline:latest\""))))
    assert verdict.state == State.FAILING
    assert verdict.reasons == ['StatefulSet db: FailedCreate: violates PodSecurity "baseline:latest"']


def test_a_failed_create_event_no_longer_counts_once_the_pods_exist():
    verdict = rollout.assess({"StatefulSet/db": 1}, objects(
        ("StatefulSet", deployment(name="db", generation=1, observed=1, replicas=1, total=1, ready=0, updated=1)),
        ("Event", event("db.1", "StatefulSet", "db", "FailedCreate", 'serviceaccount "default" not found'))))
    assert verdict.state == State.PROGRESSING
    assert verdict.reasons == ['StatefulSet db: FailedCreate: serviceaccount "default" not found']


def test_a_failed_create_event_on_a_replicaset_is_only_a_warning_its_condition_decides():
    verdict = rollout.assess(WEB, objects(
        ("Deployment", deployment(ready=0, available=0)), ("ReplicaSet", replicaset()),
        ("Event", event("rs.1", "ReplicaSet", "web-abc", "FailedCreate", 'serviceaccount "default" not found'))))
    assert verdict.state == State.PROGRESSING


def test_a_job_that_cannot_create_its_pod_is_failing():
    verdict = rollout.assess({"Job/migrate": 1}, objects(
        ("Job", job()), ("Event", event("j.1", "Job", "migrate", "FailedCreate", "exceeded quota"))))
    assert verdict.state == State.FAILING


def _refused_replicaset(message: str) -> rollout.Verdict:
    refused = [{"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
                "message": f'pods "web-abc-x" is forbidden: {message}'}]
    return rollout.assess(WEB, objects(("Deployment", deployment(ready=0, available=0)),
                                       ("ReplicaSet", replicaset(conditions=refused))))


@pytest.mark.parametrize("message", [
    # the new namespace's ServiceAccount does not exist yet
    'error looking up service account pr-1/default: serviceaccount "default" not found',
    # the quota controller has not counted the new namespace's ResourceQuota yet
    "status unknown for quota: preview-quota, resources: pods",
])
def test_a_pod_refused_because_the_new_namespace_is_not_set_up_yet_is_still_progressing(message):
    verdict = _refused_replicaset(message)
    assert verdict.state == State.PROGRESSING
    assert message in verdict.reasons[0]


def test_an_exceeded_quota_is_failing():
    verdict = _refused_replicaset("exceeded quota: preview-quota, requested: pods=1, used: pods=1, limited: pods=1")
    assert verdict.state == State.FAILING
    assert "exceeded quota" in verdict.reasons[0]


def test_a_progress_deadline_exceeded_is_failing():
    condition = [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                  "message": 'ReplicaSet "web-abc" has timed out progressing.'}]
    verdict = rollout.assess(WEB, objects(("Deployment", deployment(ready=0, available=0, conditions=condition))))
    assert verdict.state == State.FAILING


def test_other_warnings_are_kept_as_detail_but_do_not_fail():
    verdict = rollout.assess(WEB, objects(("Deployment", deployment(ready=0, available=0)),
                                          ("ReplicaSet", replicaset()), ("Pod", pod()),
                                          ("Event", event("e1", "Pod", "web-abc-1", "FailedMount", "no such volume"))))
    assert verdict.state == State.PROGRESSING
    assert verdict.reasons == ["Pod web-abc-1: FailedMount: no such volume"]


def test_pods_of_other_workloads_and_terminating_pods_do_not_fail_the_preview():
    verdict = rollout.assess(WEB, objects(
        ("Deployment", deployment(ready=1, available=1)), ("ReplicaSet", replicaset()),
        ("ReplicaSet", replicaset(name="cron-x", owner="other")),
        ("Pod", pod(name="other-1", owner=("ReplicaSet", "cron-x"), waiting="CrashLoopBackOff")),
        ("Pod", pod(name="web-abc-old", waiting="CrashLoopBackOff", deleting=True))))
    assert verdict.state == State.PROGRESSING


@pytest.mark.parametrize("conditions,state,pending", [
    ([{"type": "Complete", "status": "True"}], State.READY, []),
    ([], State.PROGRESSING, ["Job migrate: not complete"]),
    ([{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the "
       "specified backoff limit"}], State.FAILING, []),
], ids=["complete", "running", "failed"])
def test_a_job_in_the_bundle_must_complete(conditions, state, pending):
    verdict = rollout.assess({"Job/migrate": 1}, objects(("Job", job(conditions=conditions))))
    assert (verdict.state, verdict.pending) == (state, pending)
    if state == State.FAILING:
        assert verdict.reasons == ["Job migrate failed: BackoffLimitExceeded: Job has reached the specified "
                                   "backoff limit"]


def test_messages_name_what_is_pending_and_why_and_stay_bounded():
    verdict = rollout.Verdict(State.FAILING, ["Deployment web: 0/2 ready"], ["pod p container c is ImagePullBackOff"])
    assert rollout.failure_message(verdict, 60) == ("Not becoming ready (Deployment web: 0/2 ready): pod p container c "
                                                    "is ImagePullBackOff (still failing after 60s)")
    assert rollout.timeout_message(verdict, 300).startswith("not ready after 300s: Deployment web: 0/2 ready. pod p")
    huge = rollout.Verdict(State.FAILING, ["x"], ["y" * 10_000])
    assert len(rollout.failure_message(huge, 1)) == rollout.MAX_MESSAGE


@pytest.mark.parametrize("kind,obj", [
    ("Deployment", {"metadata": {"namespace": NS}}),
    ("Deployment", {"metadata": {"name": "web", "namespace": NS}, "spec": {"replicas": "two"}}),
    ("Pod", {"metadata": {"name": "p", "namespace": NS}, "status": {"containerStatuses": "oops"}}),
    ("Pod", {"metadata": "not an object"}),
    ("Namespace", {"metadata": {"name": "pr-1", "labels": ["a"]}}),
], ids=["no-name", "replicas-string", "statuses-string", "metadata-string", "labels-list"])
def test_objects_the_watcher_cannot_read_are_refused_as_malformed(kind, obj):
    with pytest.raises(rollout.Malformed):
        rollout.summarize(kind, obj)


def test_the_cache_keeps_only_events_of_namespaces_it_knows_and_forgets_a_deleted_namespace():
    cache = ClusterCache()
    namespace = {"metadata": {"name": NS, "uid": "u1", "labels": {}}, "status": {"phase": "Active"}}
    assert cache.apply("Namespace", "ADDED", namespace) == (NS, False)
    assert cache.apply("Event", "ADDED", {**event("e1", "Pod", "p", "BackOff", "x"),
                                          "metadata": {"name": "e1", "namespace": "kube-system"}}) == (None, False)
    assert cache.apply("Deployment", "ADDED", deployment()) == (NS, False)
    assert ("Deployment", "web") in cache.objects[NS].workloads
    assert cache.apply("Namespace", "DELETED", namespace) == (NS, True)
    assert NS not in cache.objects and NS not in cache.namespaces


def test_objects_listed_before_their_namespace_are_kept():
    cache = ClusterCache()
    cache.replace("Deployment", [deployment()])  # the lists of different kinds arrive in any order
    cache.replace("Namespace", [{"metadata": {"name": NS, "uid": "u"}, "status": {}}])
    assert ("Deployment", "web") in cache.objects[NS].workloads


def test_a_fresh_list_reports_the_namespaces_that_vanished_meanwhile():
    cache = ClusterCache()
    for name in ("pr-1", "pr-2"):
        cache.apply("Namespace", "ADDED", {"metadata": {"name": name, "uid": name}, "status": {}})
    touched, gone = cache.replace("Namespace", [{"metadata": {"name": "pr-2", "uid": "pr-2"}, "status": {}}])
    assert (touched, gone) == ({"pr-2"}, {"pr-1"})


def test_a_fresh_list_of_a_kind_replaces_what_was_known_of_it():
    cache = ClusterCache()
    cache.apply("Namespace", "ADDED", {"metadata": {"name": NS, "uid": "u"}, "status": {}})
    cache.apply("Deployment", "ADDED", deployment(name="old"))
    touched, _ = cache.replace("Deployment", [deployment(name="web"), {"metadata": {}}])  # one malformed: skipped
    assert touched == {NS}
    assert set(cache.objects[NS].workloads) == {("Deployment", "web")}


def test_a_namespace_keeps_only_its_latest_events():
    objs = NamespaceObjects()
    for i in range(rollout.MAX_EVENTS_PER_NAMESPACE + 5):
        _ns, name, summary = rollout.summarize("Event", event(f"e{i}", "Pod", "p", "BackOff", str(i)))
        objs.put("Event", name, summary)
    assert len(objs.events) == rollout.MAX_EVENTS_PER_NAMESPACE
    assert next(iter(objs.events)) == "e5"


# --- crashes, in the containers' own words -----------------------------------------------------------------

def crashing_pod(name="web-abc-1", state=None, ready=False, restarts=2, exit_code=1, owner=("ReplicaSet", "web-abc")):
    return {"metadata": {"name": name, "namespace": NS,
                         "ownerReferences": [{"kind": owner[0], "name": owner[1], "controller": True}]},
            "status": {"phase": "Running", "containerStatuses": [{
                "name": "web", "ready": ready, "restartCount": restarts,
                "state": state or {"running": {"startedAt": "2026-12-04T00:00:00Z"}},
                "lastState": {"terminated": {"exitCode": exit_code, "reason": "Error"}}}]}}


BACKING_OFF = {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 20s restarting failed container=web"}}


@pytest.mark.parametrize("state", [BACKING_OFF, None], ids=["backing-off", "started-again"])
def test_a_container_that_keeps_exiting_with_an_error_is_failing_whichever_moment_it_is_seen(state):
    verdict = rollout.assess(WEB, objects(("Deployment", deployment(ready=0, available=0)),
                                          ("ReplicaSet", replicaset()), ("Pod", crashing_pod(state=state))))
    assert verdict.state == State.FAILING
    assert verdict.reasons[0].startswith("pod web-abc-1 container web keeps crashing: exit code 1, restarted 2 times")
    assert verdict.logs == [rollout.LogSource("web-abc-1", "web", True, 1)]


@pytest.mark.parametrize("change", [{"ready": True}, {"exit_code": 0}, {"restarts": 0}],
                         ids=["ready-again", "exited-cleanly", "never-restarted"])
def test_a_container_that_restarted_once_but_is_fine_now_is_not_crashing(change):
    verdict = rollout.assess(WEB, objects(("Deployment", deployment(ready=1, available=1)),
                                          ("ReplicaSet", replicaset()), ("Pod", crashing_pod(**change))))
    assert verdict.state == State.PROGRESSING
    assert verdict.logs == []


def test_replicas_failing_alike_are_told_once_and_the_first_pods_words_are_kept():
    verdict = rollout.assess(WEB, objects(
        ("Deployment", deployment(ready=0, available=0)), ("ReplicaSet", replicaset()),
        ("Pod", pod(name="web-abc-1", waiting="ImagePullBackOff")),
        ("Pod", pod(name="web-abc-2", waiting="ImagePullBackOff")),
        ("Pod", pod(name="web-abc-3", waiting="ImagePullBackOff"))))
    assert verdict.reasons == ["pod web-abc-1 container web is ImagePullBackOff: details (and 2 more pods)"]


def test_events_that_repeat_a_failing_reason_are_left_out_and_new_ones_are_kept_up_to_three():
    repeats = [event(f"e{i}", "Pod", "web-abc-1", "Failed", "Error: details") for i in range(3)]
    news = [event(f"n{i}", "Pod", "web-abc-1", "Failed", f"something else {i}") for i in range(5)]
    verdict = rollout.assess(WEB, objects(
        ("Deployment", deployment(ready=0, available=0)), ("ReplicaSet", replicaset()),
        ("Pod", pod(waiting="ErrImagePull")), *(("Event", e) for e in repeats + news)))
    assert verdict.reasons[0] == "pod web-abc-1 container web is ErrImagePull: details"
    assert len(verdict.reasons) == 1 + rollout.MAX_EXTRA_EVENTS
    assert not any("Error: details" in r for r in verdict.reasons)


def test_a_failed_job_pod_is_a_log_source_for_its_current_run():
    failed = {"metadata": {"name": "migrate-x", "namespace": NS,
                           "ownerReferences": [{"kind": "Job", "name": "migrate", "controller": True}]},
              "status": {"phase": "Failed", "containerStatuses": [{
                  "name": "migrate", "restartCount": 0, "state": {"terminated": {"exitCode": 3, "reason": "Error"}}}]}}
    verdict = rollout.assess({"Job/migrate": 1}, objects(
        ("Job", job(conditions=[{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                                 "message": "Job has reached the specified backoff limit"}])), ("Pod", failed)))
    assert verdict.state == State.FAILING
    assert verdict.logs == [rollout.LogSource("migrate-x", "migrate", False, 3)]


def test_a_log_tail_is_the_last_lines_without_terminal_escapes_or_control_characters():
    text = "".join(f"line {i}\n" for i in range(50)) + "\x1b[31mred\x1b[0m \x07bell\r\n\n\n"
    tail = rollout.log_tail(text)
    lines = tail.split("\n")
    assert len(lines) == rollout.MAX_LOG_TAIL_LINES
    assert lines[-1] == "[31mred[0m bell"
    assert lines[0] == f"line {50 - rollout.MAX_LOG_TAIL_LINES + 1}"


def test_a_long_log_tail_keeps_its_end():
    tail = rollout.log_tail("x" * 5000 + "THE END")
    assert len(tail) == rollout.MAX_LOG_TAIL_CHARS and tail.endswith("THE END") and tail.startswith("…")


def test_a_failure_message_names_each_container_whose_log_it_shows():
    message = rollout.with_logs("Not becoming ready: crashing", [
        (rollout.LogSource("web-1", "web", True, 1), "starting\nfatal: no database\n"),
        (rollout.LogSource("migrate-x", "migrate", False, 0), "")])
    assert message == ("Not becoming ready: crashing\n\n"
                       "Last lines of pod web-1 container web (its last run, exit code 1):\n"
                       "starting\nfatal: no database\n\n"
                       "Last lines of pod migrate-x container migrate (its run):\n(the log is empty)")
