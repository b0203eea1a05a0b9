"""The reaper's plan: a pure function, tested as a table of situations."""

from datetime import UTC, datetime, timedelta

import pytest

from previews import reaper as r
from previews.gateways.github import OpenPulls

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
SETTINGS = r.ReaperSettings(grace_period=timedelta(hours=1), stuck_after=timedelta(minutes=30),
                            deletions_per_minute=2, burst_minutes=5, clock_tolerance=timedelta(minutes=5),
                            breaker_share=0.5, breaker_min_deletions=5, expiry_warning=timedelta(hours=24))
MANAGED = {"app.kubernetes.io/managed-by": "pr-previews", "previews.dev/repository-id": "1"}
HOUR = timedelta(hours=1)
MINUTE = timedelta(minutes=1)
AGREEING = r.Clocks(database=NOW, api_server=NOW)


def plan(namespaces, records, open_prs, settings=SETTINGS, clocks=AGREEING, allowance=1000.0) -> r.Plan:
    return r.plan(namespaces, records, open_prs, NOW, settings, clocks=clocks, allowance=allowance)


def ns(name="pr-1", labels=None, age=timedelta(days=1), terminating_for=None) -> r.ClusterNamespace:
    return r.ClusterNamespace(name=name, uid=f"uid-{name}", labels=MANAGED if labels is None else labels,
                              created_at=NOW - age,
                              terminating_since=NOW - terminating_for if terminating_for is not None else None)


def rec(number=1, desired="up", status="ready", expires_in=48 * HOUR, pinned=False, repo_id=1,
        namespace=None, warned=None) -> r.PreviewRecord:
    return r.PreviewRecord(id=number, repository_id=repo_id, repository="acme/shop", pr_number=number,
                           namespace=namespace or f"pr-{number}", desired=desired, status=status,
                           expires_at=NOW + expires_in, pinned=pinned, generation=1, expiry_warned_for=warned)


# The open-PR answers the gateway can give, as the reaper sees them.
OPEN_1 = {1: frozenset({1})}
CLOSED_1 = {1: frozenset({2, 3})}
UNKNOWN = {1: None}


def gateway_answer(result: OpenPulls) -> dict:
    return {1: result.open_numbers}


CASES = [
    # (id, namespaces, records, open_prs, expected {namespace: (action, reason)})
    ("open PR is kept", [ns()], [rec()], OPEN_1, {"pr-1": (r.KEEP, r.PR_OPEN)}),
    ("closed PR is deleted", [ns()], [rec()], CLOSED_1, {"pr-1": (r.DELETE, r.PR_CLOSED)}),
    ("merged PR (not open) is deleted", [ns()], [rec()], {1: frozenset()}, {"pr-1": (r.DELETE, r.PR_CLOSED)}),
    ("unknown PR state keeps", [ns()], [rec()], UNKNOWN, {"pr-1": (r.KEEP, r.PR_UNKNOWN)}),
    ("repository never asked keeps", [ns()], [rec()], {}, {"pr-1": (r.KEEP, r.PR_UNKNOWN)}),
    ("GitHub 404 keeps", [ns()], [rec()], gateway_answer(OpenPulls(known=False, reason="404")),
     {"pr-1": (r.KEEP, r.PR_UNKNOWN)}),
    ("GitHub 403 keeps", [ns()], [rec()], gateway_answer(OpenPulls(known=False, reason="403 secondary")),
     {"pr-1": (r.KEEP, r.PR_UNKNOWN)}),
    ("GitHub 429 keeps", [ns()], [rec()], gateway_answer(OpenPulls(known=False, reason="429")),
     {"pr-1": (r.KEEP, r.PR_UNKNOWN)}),
    ("GitHub 500 keeps", [ns()], [rec()], gateway_answer(OpenPulls(known=False, reason="500")),
     {"pr-1": (r.KEEP, r.PR_UNKNOWN)}),
    ("GitHub timeout keeps", [ns()], [rec()], gateway_answer(OpenPulls(known=False, reason="timeout")),
     {"pr-1": (r.KEEP, r.PR_UNKNOWN)}),
    ("expired is deleted though the PR is open", [ns()], [rec(expires_in=-HOUR)], OPEN_1,
     {"pr-1": (r.DELETE, r.EXPIRED)}),
    ("expired is deleted though GitHub is unknown", [ns()], [rec(expires_in=-HOUR)], UNKNOWN,
     {"pr-1": (r.DELETE, r.EXPIRED)}),
    ("pinned and expired is kept", [ns()], [rec(expires_in=-HOUR, pinned=True)], OPEN_1,
     {"pr-1": (r.KEEP, r.PINNED)}),
    ("pinned and closed is kept", [ns()], [rec(pinned=True)], CLOSED_1, {"pr-1": (r.KEEP, r.PINNED)}),
    ("desired down is deleted", [ns()], [rec(desired="down", status="deleting")], OPEN_1,
     {"pr-1": (r.DELETE, r.DESIRED_DOWN)}),
    ("desired down beats pinned", [ns()], [rec(desired="down", pinned=True)], OPEN_1,
     {"pr-1": (r.DELETE, r.DESIRED_DOWN)}),
    ("old orphan is deleted", [ns(age=2 * HOUR)], [], {}, {"pr-1": (r.DELETE, r.ORPHAN)}),
    ("young orphan is kept", [ns(age=timedelta(minutes=10))], [], {}, {"pr-1": (r.KEEP, r.WITHIN_GRACE)}),
    ("unlabelled namespace is never considered", [ns(labels={})], [], {}, {}),
    ("foreign managed-by value is never considered",
     [ns(labels={"app.kubernetes.io/managed-by": "helm"})], [], {}, {}),
    ("protected name is kept even if labelled", [ns(name="staging", age=9 * HOUR)], [], {},
     {"staging": (r.KEEP, r.PROTECTED)}),
    ("kube-system is kept even if labelled", [ns(name="kube-system", age=9 * HOUR)], [], {},
     {"kube-system": (r.KEEP, r.PROTECTED)}),
    ("terminating recently is kept", [ns(terminating_for=timedelta(minutes=5))], [rec()], CLOSED_1,
     {"pr-1": (r.KEEP, r.TERMINATING)}),
    ("terminating for long is reported", [ns(terminating_for=2 * HOUR)], [rec()], CLOSED_1,
     {"pr-1": (r.REPORT_STUCK, r.TERMINATING)}),
    ("record for another repository is kept",
     [ns(labels={**MANAGED, "previews.dev/repository-id": "9"})], [rec()], CLOSED_1,
     {"pr-1": (r.KEEP, r.LABEL_MISMATCH)}),
    ("ready record without namespace is marked deleted", [], [rec()], OPEN_1,
     {"pr-1": (r.MARK_DELETED, r.NAMESPACE_GONE)}),
    ("deleting record without namespace is marked deleted", [], [rec(desired="down", status="deleting")], {},
     {"pr-1": (r.MARK_DELETED, r.NAMESPACE_GONE)}),
    ("pending record without namespace is left to its deploy", [], [rec(status="pending")], OPEN_1, {}),
    ("deploying record without namespace is left to its deploy", [], [rec(status="deploying")], OPEN_1, {}),
    ("failed record without namespace is left until it expires", [], [rec(status="failed")], OPEN_1, {}),
    ("failed and expired record without namespace is marked deleted", [],
     [rec(status="failed", expires_in=-HOUR)], OPEN_1, {"pr-1": (r.MARK_DELETED, r.NAMESPACE_GONE)}),
]


@pytest.mark.parametrize("namespaces,records,open_prs,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_plan(namespaces, records, open_prs, expected):
    got = {d.namespace: (d.action, d.reason) for d in plan(namespaces, records, open_prs).decisions
           if d.action != r.WARN_EXPIRY}
    assert got == expected


def test_a_delete_carries_the_namespace_uid_for_the_precondition():
    [decision] = plan([ns(age=2 * HOUR)], [], {}).decisions
    assert decision.uid == "uid-pr-1"


def test_an_expiring_ready_preview_gets_one_warning():
    decisions = plan([ns()], [rec(expires_in=3 * HOUR)], OPEN_1).decisions
    assert [(d.action, d.reason) for d in decisions] == [(r.KEEP, r.PR_OPEN), (r.WARN_EXPIRY, r.EXPIRES_SOON)]


def test_an_expiry_already_warned_about_is_not_warned_again():
    record = rec(expires_in=3 * HOUR)
    record = rec(expires_in=3 * HOUR, warned=record.expires_at)
    assert all(d.action != r.WARN_EXPIRY for d in plan([ns()], [record], OPEN_1).decisions)


@pytest.mark.parametrize("record", [rec(expires_in=30 * HOUR), rec(expires_in=3 * HOUR, pinned=True),
                                    rec(expires_in=3 * HOUR, status="failed")])
def test_no_warning_outside_the_window_for_pinned_or_not_ready(record):
    assert all(d.action != r.WARN_EXPIRY for d in plan([ns()], [record], OPEN_1).decisions)


def _many(count: int, closed: int):
    namespaces = [ns(name=f"pr-{i}") for i in range(1, count + 1)]
    records = [rec(number=i) for i in range(1, count + 1)]
    open_prs = {1: frozenset(range(closed + 1, count + 1))}
    return namespaces, records, open_prs


def test_the_rate_limit_keeps_deletions_beyond_the_allowance_for_later_cycles():
    namespaces, records, open_prs = _many(40, closed=12)
    result = plan(namespaces, records, open_prs, allowance=10.5)
    assert len(result.deletions) == 10
    limited = [d for d in result.decisions if d.reason == r.RATE_LIMITED]
    assert len(limited) == 2 and all(d.detail == "would delete: PR closed" for d in limited)
    assert not result.alert
    assert result.allowance_after(NOW) == r.Allowance(left=0.5, at=NOW)


def test_the_rate_limit_deletes_the_most_urgent_first():
    namespaces = [ns(name="pr-1"), ns(name="pr-2"), ns(name="pr-3"), ns(name="pr-4"), ns(name="orphan-x", age=5 * HOUR)]
    records = [rec(number=1, desired="down"), rec(number=2, expires_in=-HOUR), rec(number=3, expires_in=-3 * HOUR),
               rec(number=4)]
    young = [ns(name=f"keep-{i}", age=MINUTE) for i in range(6)]
    result = plan(namespaces + young, records, {1: frozenset()}, allowance=3)
    assert [(d.namespace, d.reason) for d in sorted(result.deletions, key=r.urgency)] == [
        ("pr-1", r.DESIRED_DOWN), ("pr-4", r.PR_CLOSED), ("pr-3", r.EXPIRED)]
    assert {d.namespace for d in result.decisions if d.reason == r.RATE_LIMITED} == {"pr-2", "orphan-x"}


ALLOWANCE_CASES = [
    # (id, previous state, minutes since, expected allowance) at 2 per minute, a burst of 5 minutes (10)
    ("the first cycle may spend a whole burst", None, 0, 10.0),
    ("nothing left and no time passed", r.Allowance(0.0, NOW), 0, 0.0),
    ("the rate accrues by the minute", r.Allowance(0.0, NOW), 3, 6.0),
    ("fractions accrue too", r.Allowance(0.5, NOW), 0.25, 1.0),
    ("what was left carries over", r.Allowance(4.0, NOW), 1, 6.0),
    ("never more than a burst", r.Allowance(4.0, NOW), 60, 10.0),
    ("a clock that went back accrues nothing", r.Allowance(3.0, NOW), -10, 3.0),
]


@pytest.mark.parametrize("previous,minutes,expected", [c[1:] for c in ALLOWANCE_CASES],
                         ids=[c[0] for c in ALLOWANCE_CASES])
def test_the_allowance_accrues_at_the_rate_up_to_a_burst(previous, minutes, expected):
    assert r.available_allowance(previous, NOW + minutes * MINUTE, SETTINGS) == pytest.approx(expected)


def test_the_rate_limit_spreads_a_backlog_over_cycles_most_urgent_first():
    """Cycles a minute apart at 2 per minute: each issues what accrued, the longest expired first."""
    namespaces = [ns(name=f"pr-{i}") for i in range(1, 7)]
    records = [rec(number=i, expires_in=-i * HOUR) for i in range(1, 7)]
    state, now, issued = r.Allowance(0.0, NOW), NOW, []
    for _ in range(3):
        now += MINUTE
        allowance = r.available_allowance(state, now, SETTINGS)
        live = [n for n in namespaces if n.name not in issued]
        result = r.plan(live, [x for x in records if x.namespace not in issued], OPEN_1, now, SETTINGS,
                        clocks=r.Clocks(now, now), allowance=allowance)
        issued += [d.namespace for d in sorted(result.deletions, key=r.urgency)]
        state = result.allowance_after(now)
    assert issued == ["pr-6", "pr-5", "pr-4", "pr-3", "pr-2", "pr-1"]


def _expired(count: int):
    return ([ns(name=f"pr-{i}") for i in range(1, count + 1)],
            [rec(number=i, expires_in=-HOUR) for i in range(1, count + 1)])


def test_a_mass_expiry_is_not_stopped_by_the_breaker():
    namespaces, records = _expired(1000)
    result = plan(namespaces, records, {1: frozenset(range(1, 1001))}, allowance=1500)
    assert len(result.deletions) == 1000 and not result.alert and not result.breaker_tripped


def test_a_mass_of_desired_down_is_not_stopped_by_the_breaker():
    namespaces = [ns(name=f"pr-{i}") for i in range(1, 11)]
    records = [rec(number=i, desired="down", status="deleting") for i in range(1, 11)]
    result = plan(namespaces, records, OPEN_1)
    assert len(result.deletions) == 10 and not result.alert


def test_the_circuit_breaker_deletes_nothing_when_most_would_go():
    namespaces, records, open_prs = _many(10, closed=6)
    result = plan(namespaces, records, open_prs)
    assert result.deletions == [] and result.breaker_tripped
    assert "circuit breaker: 6 of 10" in result.alert and "PR closed" in result.alert
    assert sum(d.reason == r.BREAKER for d in result.decisions) == 6


def test_the_circuit_breaker_trips_for_a_mass_of_orphans():
    result = plan([ns(name=f"x-{i}", age=5 * HOUR) for i in range(8)] + [ns(name="pr-1")], [rec()], OPEN_1)
    assert result.deletions == [] and result.breaker_tripped
    assert "circuit breaker: 8 of 9" in result.alert and r.ORPHAN in result.alert


def test_the_breaker_holds_outside_evidence_but_lets_expiry_through():
    namespaces, records, open_prs = _many(10, closed=6)
    records[9] = rec(number=10, expires_in=-HOUR)
    result = plan(namespaces, records, open_prs)
    assert [(d.namespace, d.reason) for d in result.deletions] == [("pr-10", r.EXPIRED)]
    assert result.breaker_tripped and sum(d.reason == r.BREAKER for d in result.decisions) == 6


def test_the_breaker_ignores_a_few_deletions_in_a_small_cluster():
    namespaces, records, open_prs = _many(4, closed=3)
    result = plan(namespaces, records, open_prs)
    assert len(result.deletions) == 3 and not result.alert


CLOCK_CASES = [
    # (id, database clock, API server clock, expiry paused)
    ("all agree", NOW, NOW, False),
    ("within the tolerance", NOW - 4 * MINUTE, NOW + MINUTE, False),
    ("the service is ahead of the database", NOW - 2 * HOUR, NOW - 2 * HOUR, True),
    ("the API server is ahead", NOW, NOW + 6 * MINUTE, True),
    ("database and API server disagree though the service agrees with one",
     NOW, NOW - 10 * MINUTE, True),
    ("the database clock could not be read", None, NOW, True),
    ("the API server sent no Date", NOW, None, True),
]


@pytest.mark.parametrize("database,api_server,paused", [c[1:] for c in CLOCK_CASES], ids=[c[0] for c in CLOCK_CASES])
def test_clocks_that_disagree_pause_expiry_deletions_with_an_alert(database, api_server, paused):
    namespaces, records = _expired(3)
    result = plan(namespaces, records, OPEN_1, clocks=r.Clocks(database, api_server))
    assert result.expiry_paused is paused
    if paused:
        assert result.deletions == []
        assert [d.reason for d in result.decisions] == [r.CLOCKS_DISAGREE] * 3
        assert result.alert.startswith("clock check: ") and "expiry deletions are paused" in result.alert
    else:
        assert len(result.deletions) == 3 and not result.alert


def test_a_clock_alert_names_the_clocks_and_the_gap():
    alert = r.clock_disagreement(NOW, r.Clocks(NOW - 2 * HOUR, NOW - 2 * HOUR), timedelta(minutes=5))
    assert alert.startswith("clock check: the service's clock is 2 h ahead of the database's (tolerance 5 min")


def test_clocks_that_disagree_leave_other_deletions_alone():
    namespaces = [ns(name="pr-1"), ns(name="pr-2"), ns(name="pr-3"), ns(name="orphan", age=5 * HOUR)]
    records = [rec(number=1, expires_in=-HOUR), rec(number=2, desired="down"), rec(number=3)]
    result = plan(namespaces + [ns(name=f"k-{i}", age=MINUTE) for i in range(5)], records, {1: frozenset()},
                  clocks=r.Clocks(NOW + HOUR, NOW + HOUR))
    assert {(d.namespace, d.reason) for d in result.deletions} == {
        ("pr-2", r.DESIRED_DOWN), ("pr-3", r.PR_CLOSED), ("orphan", r.ORPHAN)}
    assert result.expiry_paused


def test_skewed_clocks_raise_no_alert_when_nothing_has_expired():
    result = plan([ns()], [rec()], OPEN_1, clocks=r.Clocks(NOW + HOUR, None))
    assert not result.alert and not result.expiry_paused


def test_unknown_pr_state_deletes_nothing_for_being_closed_even_with_allowance_to_spare():
    namespaces, records, _ = _many(20, closed=20)
    result = plan(namespaces, records, UNKNOWN, allowance=10_000)
    assert result.deletions == [] and {d.reason for d in result.decisions} == {r.PR_UNKNOWN}


def test_the_summary_counts_decisions_by_action_then_reason_deletions_first():
    namespaces, records, open_prs = _many(5, closed=1)
    records[4] = rec(number=5, expires_in=-HOUR)
    assert plan(namespaces, records, open_prs).counts() == {
        r.DELETE: {r.EXPIRED: 1, r.PR_CLOSED: 1}, r.KEEP: {r.PR_OPEN: 3}}
