"""Benchmark: parse and check of a manifest bundle (`render_bundle`), the work one PUT with manifests does.

    .venv/bin/python bench/manifest_parse.py [--runs 5] [--json]

Three bundles, each rendered --runs times in-process (no Django, no database; the parse cache is cleared
before every run, so every run parses, as a PUT with new manifests does):

* 1mib:     one Deployment plus ConfigMaps whose data fill the bundle to 1 MiB (realistic keys and values)
* dense:    1 MiB of the smallest scalars: one ConfigMap whose data are 100k short keys, and a flow list of
            numbers in a field the policy refuses (parsing is all the cost; the refusal comes after it)
* near:     a ConfigMap of 49 990 one-letter entries: just under the limit of 100 000 values (accepted)
* 500:      500 small objects (ConfigMaps and Services), the object limit
* 2000:     2000 small ConfigMaps, over the limit: refused, and how fast the refusal comes

Prints the best and the median CPU time of the process per bundle (what a PUT costs the web server, steady
however busy the machine is), and the median wall time. Run it from a checkout of any commit (it imports that
checkout's `previews.manifests`), e.g. main's in a second worktree, to compare before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import yaml

from previews import manifests as m
from previews.manifests import parsing

LIMIT = 1_048_576
CTX = m.RenderContext(namespace="pr-1", host="pr-1.preview.example.com", labels={"previews.dev/pr": "1"})


def deployment() -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}}, "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "ghcr.io/acme/shop:staging",
                                         "env": [{"name": f"VAR_{k}", "value": f"value-{k}"} for k in range(40)],
                                         "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}}}]}}}}


def configmap(name: str, entries: int) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": {"app": "web"}},
            "data": {f"setting_{k}": f"a moderately long configuration value number {k}" for k in range(entries)}}


def bundle_1mib() -> str:
    docs = [deployment()]
    text = yaml.safe_dump_all(docs)
    n = 0
    while True:
        more = yaml.safe_dump(configmap(f"config-{n}", 200))
        if len((text + "---\n" + more).encode()) > LIMIT - 100:
            break
        text += "---\n" + more
        n += 1
    return text


def bundle_dense() -> str:
    data = "".join(f"  k{k}: v\n" for k in range(60_000))
    text = f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: dense}}\ndata:\n{data}"
    size = len(text.encode())
    numbers = ",".join("1" for _ in range((LIMIT - size - 200) // 2))
    return text + f"---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: numbers}}\nextra: [{numbers}]\n"


def bundle_near_limit() -> str:
    data = "".join(f"  k{k}: v\n" for k in range(49_990))
    return f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: near}}\ndata:\n{data}"


def small_objects(count: int) -> str:
    docs = []
    for k in range(count):
        if k % 2:
            docs.append({"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"svc-{k}"},
                         "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}})
        else:
            docs.append(configmap(f"config-{k}", 2))
    return yaml.safe_dump_all(docs)


def time_one(text: str) -> tuple[float, float, str]:
    """(CPU seconds of this process, wall seconds, outcome) of one render_bundle."""
    cache_clear = getattr(parsing, "_parsed_documents", None)
    if cache_clear is not None and hasattr(cache_clear, "cache_clear"):
        cache_clear.cache_clear()
    cpu, wall = time.process_time(), time.perf_counter()
    try:
        m.render_bundle(text, CTX, LIMIT)
        outcome = "accepted"
    except m.ManifestError as exc:
        outcome = f"refused: {str(exc)[:80]}"
    return time.process_time() - cpu, time.perf_counter() - wall, outcome


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    bundles = {"1mib": bundle_1mib(), "dense": bundle_dense(), "near": bundle_near_limit(), "500": small_objects(500),
               "2000": "".join("---\n" + yaml.safe_dump(configmap(f"c-{k}", 1)) for k in range(2000))}
    results = {}
    for name, text in bundles.items():
        cpu_times, wall_times, outcome = [], [], ""
        for _ in range(args.runs):
            cpu, wall, outcome = time_one(text)
            cpu_times.append(cpu)
            wall_times.append(wall)
        results[name] = {"bytes": len(text.encode()), "cpu_best_s": round(min(cpu_times), 3),
                         "cpu_median_s": round(statistics.median(cpu_times), 3),
                         "wall_median_s": round(statistics.median(wall_times), 3), "outcome": outcome}
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for name, r in results.items():
        print(f"{name:6} {r['bytes']:>8} bytes  CPU best {r['cpu_best_s']:.3f} s  median {r['cpu_median_s']:.3f} s  "
              f"wall median {r['wall_median_s']:.3f} s  {r['outcome']}")


if __name__ == "__main__":
    main()
