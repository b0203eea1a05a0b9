"""What previews cost: requested CPU and memory from pod templates times replicas (pure, no I/O).

A pod's request is Kubernetes' effective request: the sum over its containers,
or the largest init container's if that is larger (init containers run one at a
time, before the others). A sleeping workload requests nothing; what it would
request at its remembered replicas is what sleeping saves.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

_QUANTITY = re.compile(r"([+]?[0-9]+(?:\.[0-9]*)?|[+]?\.[0-9]+)([a-zA-Z]{0,2})", re.ASCII)
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1), "k": Decimal(10**3),
            "M": Decimal(10**6), "G": Decimal(10**9), "T": Decimal(10**12), "P": Decimal(10**15),
            "E": Decimal(10**18)}


# The largest quantity counted, in base units: what the cluster holds may predate the policy's bounds (or come
# from objects the policy never saw), and the pages must still answer.
MAX_QUANTITY = Decimal(2**63)


def quantity(value: object) -> Decimal:
    """A Kubernetes quantity ("50m", "64Mi", "1.5", 2) as a number of base units, at most MAX_QUANTITY; 0 for
    anything unreadable or negative."""
    return max(Decimal(0), min(_quantity(value), MAX_QUANTITY))


def _quantity(value: object) -> Decimal:
    if isinstance(value, bool):
        return Decimal(0)
    if isinstance(value, float) and not math.isfinite(value):
        return Decimal(0)
    if isinstance(value, int | float):
        if isinstance(value, int) and value.bit_length() > 64:
            return MAX_QUANTITY
        return Decimal(str(value))
    if not isinstance(value, str):
        return Decimal(0)
    if len(value) > 64:  # no real quantity is longer; a long run of digits would be costly to convert
        return Decimal(0)
    match = _QUANTITY.fullmatch(value.strip())
    if match is None:
        return Decimal(0)
    number, suffix = match.groups()
    try:
        base = Decimal(number)
    except InvalidOperation:
        return Decimal(0)
    if suffix in _BINARY:
        return base * _BINARY[suffix]
    if suffix in _DECIMAL:
        return base * _DECIMAL[suffix]
    return Decimal(0)


_MAX_REPLICAS = 100_000


@dataclass(frozen=True)
class Requests:
    cpu_millis: int = 0
    memory_bytes: int = 0

    def __add__(self, other: Requests) -> Requests:
        return Requests(self.cpu_millis + other.cpu_millis, self.memory_bytes + other.memory_bytes)

    def times(self, n: int) -> Requests:
        n = min(max(n, 0), _MAX_REPLICAS)
        return Requests(self.cpu_millis * n, self.memory_bytes * n)

    def as_dict(self) -> dict[str, int | str]:
        return {"cpu_millicores": self.cpu_millis, "memory_bytes": self.memory_bytes,
                "cpu": format_cpu(self.cpu_millis), "memory": format_memory(self.memory_bytes)}


def _container(container: object) -> Requests:
    if not isinstance(container, dict):
        return Requests()
    resources = container.get("resources") or {}
    requests = (resources.get("requests") or {}) if isinstance(resources, dict) else {}
    if not isinstance(requests, dict):
        return Requests()
    return Requests(int(quantity(requests.get("cpu")) * 1000), int(quantity(requests.get("memory"))))


def pod_requests(pod_spec: dict) -> Requests:
    containers = pod_spec.get("containers") or []
    inits = pod_spec.get("initContainers") or pod_spec.get("init_containers") or []
    total = Requests()
    for c in containers if isinstance(containers, list) else []:
        total = total + _container(c)
    for c in inits if isinstance(inits, list) else []:
        init = _container(c)
        total = Requests(max(total.cpu_millis, init.cpu_millis), max(total.memory_bytes, init.memory_bytes))
    return total


@dataclass(frozen=True)
class Workload:
    kind: str
    name: str
    replicas: int
    asleep_replicas: int | None
    pod_spec: dict


@dataclass(frozen=True)
class Cost:
    requested: Requests  # what the namespace requests now
    saved: Requests  # what its sleeping workloads would request when awake

    def as_dict(self) -> dict:
        return {"requested": self.requested.as_dict(), "saved_by_sleeping": self.saved.as_dict()}


def namespace_cost(workloads: Iterable[Workload]) -> Cost:
    requested, saved = Requests(), Requests()
    for w in workloads:
        per_pod = pod_requests(w.pod_spec)
        requested = requested + per_pod.times(max(w.replicas, 0))
        if w.asleep_replicas:
            saved = saved + per_pod.times(w.asleep_replicas)
    return Cost(requested, saved)


def total(costs: Iterable[Cost]) -> Cost:
    requested, saved = Requests(), Requests()
    for c in costs:
        requested, saved = requested + c.requested, saved + c.saved
    return Cost(requested, saved)


def format_cpu(millis: int) -> str:
    if millis < 1000:
        return f"{millis}m"
    if millis >= 10**15:  # whole cores: a float of a very large int would overflow, or print in e-notation
        return f"{millis // 1000}"
    return f"{millis / 1000:g}"


def format_memory(n: int) -> str:
    if n >= 2**60:
        return f"{n // 2**30}Gi"
    for unit, size in (("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
        if n >= size:
            return f"{n / size:.1f}".rstrip("0").rstrip(".") + unit
    return f"{n}"
