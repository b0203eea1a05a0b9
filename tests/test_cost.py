"""What previews cost: Kubernetes quantities and pod requests (pure)."""

from decimal import Decimal

import pytest

from previews import cost


@pytest.mark.parametrize("raw,expected", [
    ("50m", Decimal("0.05")), ("1", Decimal(1)), ("1.5", Decimal("1.5")), (2, Decimal(2)), (0.25, Decimal("0.25")),
    ("64Mi", Decimal(64 * 2**20)), ("1Gi", Decimal(2**30)), ("128M", Decimal(128 * 10**6)), ("1k", Decimal(1000)),
    ("500u", Decimal("0.0005")), (".5", Decimal("0.5")),
    ("", Decimal(0)), (None, Decimal(0)), (True, Decimal(0)), ("lots", Decimal(0)), ("1Xi", Decimal(0)),
    ("-1", Decimal(0)), ("1e3", Decimal(0)), ({"cpu": 1}, Decimal(0)),
])
def test_quantities(raw, expected):
    assert cost.quantity(raw) == expected


def container(cpu=None, memory=None) -> dict:
    requests = {k: v for k, v in (("cpu", cpu), ("memory", memory)) if v is not None}
    return {"name": "c", "resources": {"requests": requests}}


@pytest.mark.parametrize("spec,cpu,memory", [
    ({"containers": [container("50m", "64Mi")]}, 50, 64 * 2**20),
    ({"containers": [container("50m", "64Mi"), container("100m")]}, 150, 64 * 2**20),
    ({"containers": [container("50m", "64Mi")], "initContainers": [container("1", "16Mi")]}, 1000, 64 * 2**20),
    ({"containers": [{"name": "no-requests"}]}, 0, 0),
    ({"containers": "nonsense"}, 0, 0),
    ({}, 0, 0),
])
def test_pod_requests(spec, cpu, memory):
    assert cost.pod_requests(spec) == cost.Requests(cpu, memory)


def test_a_namespace_costs_requests_times_replicas_and_sleeping_saves_the_remembered_ones():
    web = {"containers": [container("50m", "64Mi")]}
    db = {"containers": [container("100m", "128Mi")]}
    awake = cost.namespace_cost([cost.Workload("Deployment", "web", 2, None, web),
                                 cost.Workload("StatefulSet", "db", 3, None, db)])
    assert awake.requested == cost.Requests(400, 512 * 2**20) and awake.saved == cost.Requests()
    asleep = cost.namespace_cost([cost.Workload("Deployment", "web", 0, 2, web),
                                  cost.Workload("StatefulSet", "db", 0, 3, db)])
    assert asleep.requested == cost.Requests() and asleep.saved == awake.requested
    assert cost.total([awake, asleep]).as_dict() == {
        "requested": {"cpu_millicores": 400, "memory_bytes": 512 * 2**20, "cpu": "400m", "memory": "512Mi"},
        "saved_by_sleeping": {"cpu_millicores": 400, "memory_bytes": 512 * 2**20, "cpu": "400m", "memory": "512Mi"}}


@pytest.mark.parametrize("millis,text", [(0, "0m"), (400, "400m"), (1000, "1"), (1500, "1.5")])
def test_cpu_is_shown_like_kubernetes(millis, text):
    assert cost.format_cpu(millis) == text
