"""Time from a PUT to the first HTTP 200 of the new commit at the preview's URL, on the real node.

What a person waits for after CI's PUT: the request through the real API (gunicorn), the deploy by a real
qcluster, the rollout followed by the real watcher, the sample app's pods started by kubelet and containerd,
and Traefik routing the preview's host to them, until `GET http://<namespace>.preview.localhost:<port>/`
answers 200 with the new commit on the page. Two cases, 20 runs each by default, one preview at a time:

  (a) a new preview: PUT of a PR that has none, until its URL serves its commit;
  (b) a push to a live preview: PUT of a new commit and image, until the URL serves the new commit.

Beside each run, in the same run and interleaved with it, the plain alternative with the same rendered
objects (the service's own rendering of the same preview, under another namespace and host): `kubectl apply`,
`kubectl rollout status`, then the same loop of GETs on its URL until the commit answers.

Each run's two previews are deleted before the next (the node's room is reported, not used up). Then what
the real node holds: the memory each sample-app preview uses (its pods' cgroups, measured in each run), the
node's room for more previews by pods, by pod addresses, by CPU and memory requests and by memory used, and
the real node's own idle CPU (kubelet, containerd and its shims, kube-proxy, Traefik, CoreDNS) over
--idle-seconds with the warm-up previews live.

    .venv/bin/python bench/serve.py [--runs 20] [--routing ingress|gateway] [--json]

Needs the local cluster with its real node (scripts/kube up) and the local Postgres; runs in the
`previews_bench` database and deletes everything it made at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root, for `bench.common`

from bench.api_load import free_port, gunicorn_command
from bench.common import ROOT, cpu_model, log, setup_django
from bench.provision import kubeconfig_path, kubectl, server_version
from bench.throughput import (
    fmt_stats,
    read_proc_cpu_seconds,
    service_env,
    start_process,
    stats,
    stop_process,
    wait_http_up,
)

TARGETS = {"new_p50": 3.0, "push_p50": 2.0, "ratio": 1.1}
RUN_TIMEOUT = 120.0  # seconds one run may take before the benchmark gives up
POLL = 0.05  # seconds between GETs of the URL
BENCH_LABEL = "previews.local/serve-bench"


def node_env() -> dict[str, str]:
    out = subprocess.run([str(ROOT / "scripts" / "node"), "env"], check=True, capture_output=True, text=True)
    return dict(line.removeprefix("export ").split("=", 1) for line in out.stdout.splitlines() if "=" in line)


def node(*args: str) -> str:
    return subprocess.run([str(ROOT / "scripts" / "node"), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


def get(port: int, host: str) -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", "/", headers={"Host": host})
        response = connection.getresponse()
        return response.status, response.read().decode(errors="replace")
    except OSError:
        return 0, ""
    finally:
        connection.close()


def until_serving(port: int, host: str, sha: str, started: float) -> float:
    """Seconds from `started` (time.monotonic()) to the first 200 whose page shows `sha`."""
    while time.monotonic() - started < RUN_TIMEOUT:
        status, body = get(port, host)
        if status == 200 and f'title="{sha}"' in body:
            return time.monotonic() - started
        time.sleep(POLL)
    raise SystemExit(f"{host} did not serve commit {sha[:7]} within {RUN_TIMEOUT:.0f}s (last status {status})")


class Api:
    def __init__(self, port: int, token: str, repository) -> None:
        self.port, self.repository = port, repository
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def call(self, method: str, pr: int, body: dict | None = None) -> tuple[int, dict]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            path = f"/api/v1/repos/{self.repository.owner}/{self.repository.name}/previews/{pr}"
            connection.request(method, path, body=json.dumps(body) if body else None, headers=self.headers)
            response = connection.getresponse()
            data = response.read()
            return response.status, json.loads(data) if data else {}
        finally:
            connection.close()


def ours(api: Api, port: int, pr: int, sha: str, image: str) -> float:
    started = time.monotonic()
    status, body = api.call("PUT", pr, {"head_sha": sha, "image": image, "title": "serve bench"})
    if status not in (200, 201):
        raise SystemExit(f"PUT of PR {pr} answered {status}: {body}")
    return until_serving(port, body["url"].split("//", 1)[1], sha, started)


def rendered(repository, namespace: str, sha: str, image: str) -> str:
    """The objects the service applies for this preview (namespace, guardrails, the bundle), as one YAML stream
    for kubectl, labelled as the benchmark's instead of the service's so the watcher follows none of them."""
    from django.utils import timezone

    from previews import links, manifests, provisioning
    from previews.models import Preview

    preview = Preview(repository=repository, pr_number=1, namespace=namespace, head_sha=sha,
                      images={"localhost/previews-sample": image}, url=links.preview_url(repository, namespace),
                      expires_at=timezone.now())
    plan = provisioning.plan_deploy(preview)
    ours_only = set(provisioning.preview_labels(preview))
    # The namespace keeps the managed-by label alone: the Gateway admits routes only from namespaces with it
    # (the reaper would take it for an orphan only after its grace period, an hour by default).
    namespace_labels = {k: v for k, v in plan.namespace_labels.items()
                        if k not in ours_only or k == manifests.MANAGED_BY_LABEL} | {BENCH_LABEL: "1"}
    docs = [{"apiVersion": "v1", "kind": "Namespace",
             "metadata": {"name": namespace, "labels": namespace_labels, "annotations": plan.namespace_annotations}}]
    for obj in plan.guardrails + plan.objects:
        obj = json.loads(json.dumps(obj))
        obj["metadata"]["labels"] = {k: v for k, v in obj["metadata"].get("labels", {}).items()
                                     if k not in ours_only} | {BENCH_LABEL: "1"}
        template = (obj.get("spec") or {}).get("template")
        if template:
            template["metadata"]["labels"] = {k: v for k, v in template["metadata"]["labels"].items()
                                              if k not in ours_only or k == manifests.PR_LABEL}
        docs.append(obj)
    return yaml.safe_dump_all(docs)


def plain(port: int, repository, namespace: str, sha: str, image: str) -> float:
    """kubectl apply of the same objects, kubectl rollout status, then GETs until the commit answers."""
    text = rendered(repository, namespace, sha, image)
    host = f"{namespace}.{repository.base_domain}"
    started = time.monotonic()
    applied = subprocess.run(["kubectl", "apply", "-f", "-"], input=text, capture_output=True, text=True)
    if applied.returncode:
        raise SystemExit(f"kubectl apply failed: {applied.stderr}")
    rolled = kubectl("rollout", "status", "-n", namespace, "deployment/web", "--timeout", f"{RUN_TIMEOUT:.0f}s",
                     timeout=RUN_TIMEOUT + 10)
    if rolled.returncode:
        raise SystemExit(f"kubectl rollout status failed: {rolled.stderr}")
    return until_serving(port, host, sha, started)


def node_pids() -> dict[str, list[int]]:
    state = Path(os.environ.get("PREVIEWS_STATE_DIR", ROOT / ".state")) / "kube"
    pids: dict[str, list[int]] = {}
    for name in ("containerd", "kubelet", "kube-proxy", "traefik"):
        try:
            pids[name] = [int((state / "pids" / f"{name}.pid").read_text())]
        except (OSError, ValueError):
            pids[name] = []
    socket = state / "node" / "containerd.sock"
    shims = subprocess.run(["pgrep", "-f", f"containerd-shim-runc-v2 .*-address {socket}"], capture_output=True,
                           text=True).stdout.split()
    pids["containerd shims"] = [int(p) for p in shims]
    coredns = subprocess.run(["pgrep", "-x", "coredns"], capture_output=True, text=True).stdout.split()
    pids["coredns"] = [int(p) for p in coredns]
    return pids


def idle_cpu(seconds: float) -> dict[str, float]:
    pids = node_pids()
    before = {name: sum(read_proc_cpu_seconds(p) or 0 for p in group) for name, group in pids.items()}
    time.sleep(seconds)
    after = {name: sum(read_proc_cpu_seconds(p) or 0 for p in group) for name, group in pids.items()}
    return {name: after[name] - before[name] for name in pids}


def pod_memory_bytes(namespace: str) -> int:
    """The memory the namespace's pods use now: each pod's cgroup (cgroup v1 memory controller)."""
    from kubernetes import client

    total = 0
    for pod in client.CoreV1Api().list_namespaced_pod(namespace).items:
        qos = (pod.status.qos_class or "").lower()
        parts = ["kubepods"] + ([] if qos == "guaranteed" else [qos]) + [f"pod{pod.metadata.uid}"]
        usage = Path("/sys/fs/cgroup/memory", *parts, "memory.usage_in_bytes")
        with contextlib.suppress(OSError):
            total += int(usage.read_text())
    return total


def node_room(memory_per_preview: float) -> dict[str, Any]:
    """How many more sample previews the real node takes, by each of its limits, and how many it holds now."""
    from kubernetes import client

    from previews.cost import quantity

    selector = node_env()["PREVIEWS_LOCAL_NODE_SELECTOR"]
    [real] = client.CoreV1Api().list_node(label_selector=selector).items
    allocatable = real.status.allocatable
    pods = [p for p in client.CoreV1Api().list_pod_for_all_namespaces(
        field_selector=f"spec.nodeName={real.metadata.name}").items if p.status.phase in ("Running", "Pending")]
    requested = {"cpu": 0.0, "memory": 0.0}
    for pod in pods:
        for container in pod.spec.containers:
            for resource in requested:
                requested[resource] += float(quantity(((container.resources.requests or {}).get(resource)) or 0))
    docs = [d for d in yaml.safe_load_all((ROOT / "previews" / "samples" / "shop.yaml").read_text()) if d]
    web = next(d for d in docs if d["kind"] == "Deployment")
    replicas = web["spec"]["replicas"]
    wants = {r: replicas * float(quantity(web["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"][r]))
             for r in requested}
    free = {r: float(quantity(allocatable[r])) - requested[r] for r in requested}
    return {"node": real.metadata.name, "pods_now": len(pods), "max_pods": int(allocatable["pods"]),
            "cpu_allocatable": float(quantity(allocatable["cpu"])),
            "memory_allocatable_gib": float(quantity(allocatable["memory"])) / 2**30,
            "more_by_pods": (int(allocatable["pods"]) - len(pods)) // replicas,
            "more_by_addresses": (254 - 10 - len(pods)) // replicas,
            "more_by_cpu_requests": int(free["cpu"] // wants["cpu"]),
            "more_by_memory_requests": int(free["memory"] // wants["memory"]),
            "more_by_memory_used": int(free["memory"] // memory_per_preview) if memory_per_preview else None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=20, help="runs of each case (default 20)")
    parser.add_argument("--routing", choices=("ingress", "gateway"), default="ingress")
    parser.add_argument("--idle-seconds", type=float, default=30.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if not 1 <= args.runs <= 60:
        parser.error("--runs must be between 1 and 60 (the real node holds about 100 sample previews)")

    env_node = node_env()
    # Plain HTTP on Traefik's other entry point: the figures are of the deploy and the routing, not TLS.
    http_port = int(env_node["PREVIEWS_LOCAL_HTTP_PORT"])
    os.environ["KUBECONFIG"] = kubeconfig_path()
    os.environ.update({"PREVIEWS_INGRESS_CLASS": env_node["PREVIEWS_INGRESS_CLASS"],
                       "PREVIEWS_PREVIEW_URL_SCHEME": "http", "PREVIEWS_PREVIEW_URL_PORT": str(http_port)})
    os.environ["DJANGO_SECRET_KEY"] = secret_key = secrets.token_urlsafe(40)
    setup_django("config.settings_test")
    from kubernetes import config

    from previews import services
    from previews.gateways import kube
    from previews.models import Repository

    config.load_kube_config(os.environ["KUBECONFIG"])
    kube.ping()
    server, _client = server_version()
    sample = node("sample-image")
    prefix = f"sv{secrets.token_hex(3)}"
    template = (ROOT / "previews" / "samples" / "shop.yaml").read_text()
    if args.routing == "gateway":
        template = yaml.safe_dump_all([d for d in yaml.safe_load_all(template) if d["kind"] != "Ingress"])
    repository = Repository.objects.create(
        owner="bench", name=prefix, base_domain="preview.localhost", namespace_prefix=prefix,
        manifest_template=template, image_name="localhost/previews-sample", routing=args.routing,
        node_selector=env_node["PREVIEWS_LOCAL_NODE_SELECTOR"], tolerations=env_node["PREVIEWS_LOCAL_TOLERATIONS"],
        max_live_previews=args.runs + 5, allow_cached_images=True)  # its image is in the node's runtime
    token, plaintext = services.token_create(name=f"serve-{prefix}", repository=repository)
    log_dir = Path(tempfile.mkdtemp(prefix=f"serve-{prefix}-"))
    web_port = free_port()
    database_url = os.environ["DATABASE_URL"]
    senv = service_env(database_url, secret_key, "WARNING")
    processes = [
        start_process("gunicorn", gunicorn_command(web_port), senv, log_dir),
        start_process("qcluster", [sys.executable, "manage.py", "qcluster"], senv, log_dir),
        start_process("watcher", [sys.executable, "manage.py", "watch_cluster"], senv, log_dir),
    ]
    kubectl_namespaces: list[str] = []
    results: dict[str, Any] = {"runs": args.runs, "routing": args.routing, "server": server,
                               "cpu": cpu_model(), "nproc": len(os.sched_getaffinity(0)),
                               "load_at_start": os.getloadavg()}
    try:
        wait_http_up(processes[0], web_port, time.monotonic() + 90)
        api = Api(web_port, plaintext, repository)
        # A first preview and a first kubectl namespace that nothing measures: every process is warm.
        warm = secrets.token_hex(20)
        node("tag", sample, f"localhost/previews-sample:{prefix}-warm")
        ours(api, http_port, args.runs + 1, warm, f"localhost/previews-sample:{prefix}-warm")
        kubectl_namespaces.append(f"{prefix}k-warm")
        plain(http_port, repository, kubectl_namespaces[-1], warm, f"localhost/previews-sample:{prefix}-warm")
        ours_new, ours_push, plain_new, plain_push, memory = [], [], [], [], []
        for i in range(1, args.runs + 1):
            sha, again = secrets.token_hex(20), secrets.token_hex(20)
            image, pushed = (f"localhost/previews-sample:{prefix}-{i}-{s[:7]}" for s in (sha, again))
            node("tag", sample, image)
            node("tag", sample, pushed)
            namespace = f"{prefix}k-{i}"
            kubectl_namespaces.append(namespace)
            ours_new.append(ours(api, http_port, i, sha, image))
            plain_new.append(plain(http_port, repository, namespace, sha, image))
            ours_push.append(ours(api, http_port, i, again, pushed))
            plain_push.append(plain(http_port, repository, namespace, again, pushed))
            memory.append(pod_memory_bytes(f"{prefix}-{i}"))
            log(f"run {i}: new: ours {ours_new[-1]:.2f}s, kubectl {plain_new[-1]:.2f}s; "
                f"push: ours {ours_push[-1]:.2f}s, kubectl {plain_push[-1]:.2f}s")
            # Each run's previews go before the next: the real node's room is not what is measured here.
            api.call("DELETE", i)
            kubectl("delete", "namespace", "--wait=false", namespace)
        results.update({"new": stats(ours_new), "new_kubectl": stats(plain_new),
                        "push": stats(ours_push), "push_kubectl": stats(plain_push)})
        per_preview = sum(memory) / len(memory)
        results["memory_per_preview_mib"] = per_preview / 2**20
        results["room"] = node_room(per_preview)
        log(f"measuring the real node's idle CPU over {args.idle_seconds:.0f}s")
        results["idle_cpu_seconds"] = idle_cpu(args.idle_seconds)
        results["idle_pods"] = node_room(per_preview)["pods_now"]
        results["idle_seconds"] = args.idle_seconds
    finally:
        for pr in (args.runs + 1, *range(1, args.runs + 1)):
            try:
                Api(web_port, plaintext, repository).call("DELETE", pr)
            except OSError as exc:
                log(f"DELETE of PR {pr}: {exc}")
        if kubectl_namespaces:
            kubectl("delete", "namespace", "--wait=false", *kubectl_namespaces)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            left = kubectl("get", "namespaces", "-o", "name").stdout
            if f"namespace/{prefix}" not in left:
                break
            time.sleep(1)
        for proc in reversed(processes):
            stop_process(proc)
        repository.previews.all().delete()
        token.delete()
        repository.delete()
    print_report(results)
    if args.json:
        print(json.dumps(results, indent=2, default=str))
    return 0


def print_report(r: dict[str, Any]) -> None:
    new_ratio = r["new"]["p50"] / r["new_kubectl"]["p50"]
    push_ratio = r["push"]["p50"] / r["push_kubectl"]["p50"]
    print(f"bench/serve.py: {r['runs']} runs of each case, {r['routing']} routing, Kubernetes {r['server']}, "
          f"{r['nproc']} x {r['cpu']}, load at start {r['load_at_start'][0]:.2f}")
    print("PUT -> first HTTP 200 of the new commit at the preview's URL (through Traefik, on the real node):")
    print(f"  (a) new preview   service: {fmt_stats(r['new'])}")
    print(f"                    kubectl: {fmt_stats(r['new_kubectl'])}")
    print(f"                    ratio of p50s {new_ratio:.2f} (target p50 <= {TARGETS['new_p50']} s, "
          f"ratio <= {TARGETS['ratio']})")
    print(f"  (b) push          service: {fmt_stats(r['push'])}")
    print(f"                    kubectl: {fmt_stats(r['push_kubectl'])}")
    print(f"                    ratio of p50s {push_ratio:.2f} (target p50 <= {TARGETS['push_p50']} s, "
          f"ratio <= {TARGETS['ratio']})")
    room = r["room"]
    bounds = {"pods": f"pods (maxPods {room['max_pods']})", "addresses": "pod addresses (a /24)",
              "cpu_requests": f"CPU requests ({room['cpu_allocatable']:g} CPUs allocatable)",
              "memory_requests": f"memory requests ({room['memory_allocatable_gib']:.1f} GiB)",
              "memory_used": "memory used"}
    limits = "; ".join(f"{room['more_by_' + key]} by {what}" for key, what in bounds.items())
    print(f"the real node: {r['memory_per_preview_mib']:.1f} MiB used per sample preview (2 pods, their cgroups); "
          f"with {room['pods_now']} pods on it, room for more previews: {limits}")
    cpu = r["idle_cpu_seconds"]
    total = sum(cpu.values())
    parts = ", ".join(f"{name} {seconds:.2f}" for name, seconds in cpu.items())
    print(f"the real node idle, {r['idle_pods']} pods: {total:.2f} s of CPU in {r['idle_seconds']:.0f} s "
          f"({100 * total / r['idle_seconds']:.1f} % of one core): {parts}")


if __name__ == "__main__":
    raise SystemExit(main())
