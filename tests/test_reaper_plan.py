"""The reaper's plan: a pure function, tested as a table of situations."""

from datetime import UTC, datetime, timedelta

import pytest

from previews import reaper as r
from previews.github import OpenPulls

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
SETTINGS = r.ReaperSettings(grace_period=timedelta(hours=1), stuck_after=timedelta(minutes=30), max_deletions=10,
                            breaker_share=0.5, breaker_min_deletions=5, expiry_warning=timedelta(hours=24))
MANAGED = {"app.kubernetes.io/managed-by": "pr-previews", "previews.dev/repository-id": "1"}
HOUR = timedelta(hours=1)


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
    return {1: result.numbers if result.known else None}


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
    plan = r.plan(namespaces, records, open_prs, NOW, SETTINGS)
    got = {d.namespace: (d.action, d.reason) for d in plan.decisions if d.action != r.WARN_EXPIRY}
    assert got == expected


def test_the_table_has_at_least_25_cases():
    assert len(CASES) >= 25


def test_a_delete_carries_the_namespace_uid_for_the_precondition():
    [decision] = r.plan([ns(age=2 * HOUR)], [], {}, NOW, SETTINGS).decisions
    assert decision.uid == "uid-pr-1"


def test_an_expiring_ready_preview_gets_one_warning():
    decisions = r.plan([ns()], [rec(expires_in=3 * HOUR)], OPEN_1, NOW, SETTINGS).decisions
    assert [(d.action, d.reason) for d in decisions] == [(r.KEEP, r.PR_OPEN), (r.WARN_EXPIRY, r.EXPIRES_SOON)]


def test_an_expiry_already_warned_about_is_not_warned_again():
    record = rec(expires_in=3 * HOUR)
    record = rec(expires_in=3 * HOUR, warned=record.expires_at)
    assert all(d.action != r.WARN_EXPIRY for d in r.plan([ns()], [record], OPEN_1, NOW, SETTINGS).decisions)


@pytest.mark.parametrize("record", [rec(expires_in=30 * HOUR), rec(expires_in=3 * HOUR, pinned=True),
                                    rec(expires_in=3 * HOUR, status="failed")])
def test_no_warning_outside_the_window_for_pinned_or_not_ready(record):
    assert all(d.action != r.WARN_EXPIRY for d in r.plan([ns()], [record], OPEN_1, NOW, SETTINGS).decisions)


def _many(count: int, closed: int):
    namespaces = [ns(name=f"pr-{i}") for i in range(1, count + 1)]
    records = [rec(number=i) for i in range(1, count + 1)]
    open_prs = {1: frozenset(range(closed + 1, count + 1))}
    return namespaces, records, open_prs


def test_the_cap_keeps_deletions_beyond_it_for_the_next_cycle():
    namespaces, records, open_prs = _many(40, closed=12)
    plan = r.plan(namespaces, records, open_prs, NOW, SETTINGS)
    assert len(plan.deletions) == 10
    capped = [d for d in plan.decisions if d.reason == r.CAPPED]
    assert len(capped) == 2 and all(d.detail == "would delete: PR closed" for d in capped)
    assert not plan.alert


def test_the_cap_deletes_the_most_urgent_first():
    namespaces = [ns(name="pr-1"), ns(name="pr-2"), ns(name="orphan-x", age=5 * HOUR)]
    records = [rec(number=1, desired="down"), rec(number=2, expires_in=-HOUR)]
    settings = r.ReaperSettings(max_deletions=2, breaker_min_deletions=99)
    plan = r.plan(namespaces + [ns(name=f"keep-{i}") for i in range(5)], records, {1: frozenset()}, NOW, settings)
    assert sorted(d.reason for d in plan.deletions) == sorted([r.DESIRED_DOWN, r.EXPIRED])


def test_the_circuit_breaker_deletes_nothing_when_most_would_go():
    namespaces, records, open_prs = _many(10, closed=6)
    plan = r.plan(namespaces, records, open_prs, NOW, SETTINGS)
    assert plan.deletions == []
    assert "circuit breaker: 6 of 10" in plan.alert
    assert sum(d.reason == r.BREAKER for d in plan.decisions) == 6


def test_the_breaker_ignores_a_few_deletions_in_a_small_cluster():
    namespaces, records, open_prs = _many(4, closed=3)
    plan = r.plan(namespaces, records, open_prs, NOW, SETTINGS)
    assert len(plan.deletions) == 3 and not plan.alert
