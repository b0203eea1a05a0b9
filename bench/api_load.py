"""Benchmark: the preview REST API under concurrent clients on gunicorn, beside a trivial Django JSON view.

    cd /work/main && .venv/bin/python bench/api_load.py [--clients 32] [--seconds 15] [--baseline REF] [--json]

One gunicorn (127.0.0.1, a free port, 4 gthread workers x 4 threads, access log off, DEBUG off) serves the
project's URLs plus a bench-only `GET /bench/trivial` -> JsonResponse({"ok": True}) (bench/bench_settings.py,
bench/bench_urls.py), so both go through the same server and middleware. N client threads, each with one
keep-alive `http.client` connection and its own PR number, run three phases of --seconds each:

1. trivial:  GET /bench/trivial
2. API GET:  GET /api/v1/repos/{owner}/{repo}/previews/{pr}
3. API PUT:  PUT of the same path with the preview's own head_sha and image: an idempotent update (200, no deploy)

It prints requests, errors (non-2xx or transport errors), req/s, p50 and p99 per phase and the ratios to the
trivial view. With --baseline REF it first measures the code of git commit REF the same way (served from a
temporary worktree), then this tree, and prints both side by side. Everything runs against the separate
database `previews_bench` (PREVIEWS_BENCH_DB; created and migrated when absent); the repository, token and
previews it seeds are deleted at the end, and so are the queued django-q tasks there.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import platform
import resource
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root, for `bench.common`

from bench.common import BENCH_DB, ROOT, base_database_url, cpu_model, ensure_bench_database, log

WORKERS, THREADS, KEEP_ALIVE = 4, 4, 2
SERVER_SETTINGS = "bench.bench_settings"
TRIVIAL_PATH = "/bench/trivial"
MAX_REQUESTS_PER_CLIENT = 1_000_000  # a bound besides time, far above what a phase can reach
REQUEST_TIMEOUT = 30.0  # seconds for one request before it counts as an error
STARTUP_TIMEOUT = 60.0  # seconds gunicorn may take to answer the trivial view

# Run with DJANGO_SETTINGS_MODULE=config.settings and DATABASE_URL at the bench database; argv[1] is JSON.
SEED_SNIPPET = """
import json, secrets, sys
import django
django.setup()
from previews import services
from previews.models import Repository
args = json.loads(sys.argv[1])
while True:
    suffix = secrets.token_hex(3)
    name, prefix = f"shop{suffix}", f"load{suffix}"
    if not (Repository.objects.filter(owner="bench", name=name).exists()
            or Repository.objects.filter(namespace_prefix=prefix).exists()):
        break
repository = Repository.objects.create(
    owner="bench", name=name, base_domain="preview.example.com", namespace_prefix=prefix,
    image_name="localhost/previews-sample", max_live_previews=args["clients"])
_, plaintext = services.token_create(name=f"api-load-{suffix}", repository=repository)
print(json.dumps({"id": repository.pk, "owner": repository.owner, "name": repository.name, "token": plaintext}))
"""

DROP_QUEUE_SNIPPET = """
import json
import django
django.setup()
from django_q.models import OrmQ
deleted, _ = OrmQ.objects.all().delete()
print(json.dumps({"deleted": deleted}))
"""

CLEANUP_SNIPPET = """
import json, sys
import django
django.setup()
from django.db.models import Max
from django_q.models import OrmQ
from previews.models import Preview, Repository
args = json.loads(sys.argv[1])
# .only(): the models may have gained fields since this run migrated (the tree is edited concurrently).
previews = Preview.objects.filter(repository_id=args["id"]).only("pk", "repository_id")
report = {"previews": previews.count(), "max_generation": previews.aggregate(m=Max("generation"))["m"],
          "queued_tasks": OrmQ.objects.count()}
OrmQ.objects.all().delete()
previews.delete()
Repository.objects.filter(pk=args["id"]).only("pk").delete()
print(json.dumps(report))
"""


# --- Django subprocesses ---------------------------------------------------------------------------


def django_env(database_url: str, secret_key: str, settings_module: str = "config.settings",
               root: Path = ROOT) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("REDIS_URL", None)  # the queue must be the ORM one in the bench database, where it is dropped
    env.update({
        "DATABASE_URL": database_url,
        "DJANGO_SETTINGS_MODULE": settings_module,
        "DJANGO_DEBUG": "false",
        "DJANGO_SECRET_KEY": secret_key,
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "LOG_LEVEL": "WARNING",
        "PYTHONPATH": os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH", "")) if p),
    })
    return env


def run_django(snippet: str, env: dict[str, str], args: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run a Django snippet in a subprocess; its last stdout line is JSON (never echoed: it may hold a token)."""
    result = subprocess.run([sys.executable, "-c", snippet, json.dumps(args or {})], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise SystemExit(f"Django snippet failed ({result.returncode}):\n{result.stderr.strip()}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def migrate(env: dict[str, str]) -> None:
    result = subprocess.run([sys.executable, "manage.py", "migrate", "--verbosity", "0", "--no-input"], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise SystemExit(f"manage.py migrate failed ({result.returncode}):\n{result.stderr.strip()}")


# --- server ---------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def gunicorn_command(port: int, root: Path = ROOT) -> list[str]:
    return [sys.executable, "-m", "gunicorn", "config.wsgi:application", "--bind", f"127.0.0.1:{port}",
            "--workers", str(WORKERS), "--threads", str(THREADS), "--worker-class", "gthread",
            "--keep-alive", str(KEEP_ALIVE), "--chdir", str(root), "--no-control-socket",
            "--error-logfile", "-", "--log-level", "warning"]  # no --access-logfile: access log off


def gunicorn_version() -> str:
    result = subprocess.run([sys.executable, "-m", "gunicorn", "--version"], capture_output=True, text=True)
    return (result.stdout or result.stderr).strip() or "gunicorn (version unknown)"


def wait_until_up(proc: subprocess.Popen[bytes], port: int, log_path: Path) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < STARTUP_TIMEOUT:
        if proc.poll() is not None:
            raise SystemExit(f"gunicorn exited with {proc.returncode} while starting:\n{tail(log_path)}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", TRIVIAL_PATH)
            response = conn.getresponse()
            response.read()
            conn.close()
            if response.status == 200:
                return time.perf_counter() - started
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"gunicorn did not answer {TRIVIAL_PATH} within {STARTUP_TIMEOUT:.0f}s:\n{tail(log_path)}")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()  # SIGTERM to the master: graceful shutdown of its workers
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # its own session, started by us: master and workers
        proc.wait(timeout=10)


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# --- load -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Phase:
    key: str
    short: str
    label: str
    method: str
    path: str  # with {pr}
    body: str | None = None  # with {pr}

    def request_for(self, pr: int) -> tuple[str, bytes | None]:
        """The path and body of this phase's request for client `pr` (str.format would trip on the JSON)."""
        body = self.body.replace("{pr}", str(pr)).encode() if self.body is not None else None
        return self.path.replace("{pr}", str(pr)), body


@dataclass
class ClientResult:
    latencies: list[float] = field(default_factory=list)  # seconds, of 2xx responses
    statuses: Counter[int] = field(default_factory=Counter)  # 0: transport error
    enqueued: int = 0  # responses saying deploy_enqueued: true
    error_samples: list[str] = field(default_factory=list)
    finished: float = 0.0


def client_loop(port: int, phase: Phase, pr: int, headers: dict[str, str], seconds: float,
                barrier: threading.Barrier, start: list[float], result: ClientResult) -> None:
    path, body = phase.request_for(pr)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT)
    try:
        conn.connect()
    except OSError:
        conn.close()  # request() connects again and records the failure
    barrier.wait()
    deadline = start[0] + seconds
    try:
        for _ in range(MAX_REQUESTS_PER_CLIENT):
            began = time.perf_counter()
            if began >= deadline:
                break
            try:
                conn.request(phase.method, path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
                status = response.status
            except (OSError, http.client.HTTPException) as exc:
                conn.close()  # the next request reconnects
                status, data = 0, f"{exc.__class__.__name__}: {exc}".encode()
            elapsed = time.perf_counter() - began
            result.statuses[status] += 1
            if 200 <= status < 300:
                result.latencies.append(elapsed)
                if b'"deploy_enqueued":true' in data:
                    result.enqueued += 1
            elif len(result.error_samples) < 3:
                result.error_samples.append(f"{status} {data[:300].decode(errors='replace')}")
    finally:
        result.finished = time.perf_counter()
        conn.close()


def cpu_snapshot() -> tuple[float, float, float, float]:
    """(machine busy jiffies, machine total jiffies, this process's CPU seconds, wall clock)."""
    fields = [float(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal (guest is inside user)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return total - idle, total, usage.ru_utime + usage.ru_stime, time.perf_counter()


def run_phase(port: int, phase: Phase, clients: int, seconds: float, headers: dict[str, str]) -> dict[str, Any]:
    cpu_before = cpu_snapshot()
    start: list[float] = []
    barrier = threading.Barrier(clients, action=lambda: start.append(time.perf_counter()))
    results = [ClientResult() for _ in range(clients)]
    threads = [threading.Thread(target=client_loop, args=(port, phase, i + 1, headers, seconds, barrier, start,
                                                          results[i]), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=seconds + REQUEST_TIMEOUT + 60)
    if any(thread.is_alive() for thread in threads):
        raise SystemExit(f"phase {phase.key}: clients still running long after the phase ended")
    cpu_after = cpu_snapshot()
    elapsed = max(r.finished for r in results) - start[0]
    ncpu = len(os.sched_getaffinity(0))
    busy, total = cpu_after[0] - cpu_before[0], cpu_after[1] - cpu_before[1]
    loadgen = (cpu_after[2] - cpu_before[2]) / ((cpu_after[3] - cpu_before[3]) * ncpu)
    latencies = sorted(x for r in results for x in r.latencies)
    statuses: Counter[int] = Counter()
    for r in results:
        statuses.update(r.statuses)
    requests = sum(statuses.values())
    ok = len(latencies)
    return {
        "phase": phase.key, "short": phase.short, "label": phase.label, "method": phase.method, "path": phase.path,
        "requests": requests, "ok": ok, "errors": requests - ok, "seconds": elapsed,
        "rps": ok / elapsed if elapsed > 0 else 0.0,
        "p50_ms": percentile(latencies, 50) * 1000 if latencies else None,
        "p99_ms": percentile(latencies, 99) * 1000 if latencies else None,
        "mean_ms": sum(latencies) / ok * 1000 if ok else None,
        "max_ms": latencies[-1] * 1000 if latencies else None,
        "machine_cpu_pct": 100 * busy / total if total else None,
        "loadgen_cpu_pct": 100 * loadgen,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "deploy_enqueued": sum(r.enqueued for r in results),
        "error_samples": [s for r in results for s in r.error_samples][:5],
    }


def percentile(ordered: list[float], pct: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); `ordered` must be sorted."""
    rank = (len(ordered) - 1) * pct / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def initial_puts(port: int, phase: Phase, clients: int, headers: dict[str, str]) -> Counter[int]:
    """One PUT per client's PR, which creates the preview (201), so that the measured PUTs are updates."""
    statuses: Counter[int] = Counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT)
    try:
        for pr in range(1, clients + 1):
            path, body = phase.request_for(pr)
            conn.request(phase.method, path, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
            statuses[response.status] += 1
            if response.status not in (200, 201):
                raise SystemExit(f"initial PUT of PR {pr} answered {response.status}: {data[:500].decode()}")
    finally:
        conn.close()
    return statuses


# --- report ---------------------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def print_report(meta: dict[str, Any], phases: list[dict[str, Any]]) -> dict[str, Any]:
    print()
    print(f"machine: {meta['nproc']} CPUs (nproc), {meta['cpu']}; Python {meta['python']}; CPU busy before the "
          f"run (other processes): {meta['background_cpu_pct']:.0f}%")
    print(f"server:  {meta['gunicorn_version']}, {meta['gunicorn_config']}")
    print(f"         app config.wsgi:application, DJANGO_SETTINGS_MODULE={SERVER_SETTINGS} (config.settings + "
          f"{TRIVIAL_PATH}), DEBUG off, database {BENCH_DB} on the local Postgres (CONN_MAX_AGE 60)")
    print(f"load:    {meta['clients']} client threads in one Python process on the same machine, one keep-alive "
          f"http.client connection and one PR each; {meta['seconds']:g} s per phase after "
          f"{meta['warmup']:g} s of warm-up")
    print()
    header = (f"{'phase':<40} {'requests':>9} {'errors':>7} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}"
              f"   {'cpu busy':>8} {'of it client':>12}")
    print(header)
    print("-" * len(header))
    for p in phases:
        print(f"{p['label']:<40} {p['requests']:>9} {p['errors']:>7} {p['rps']:>9.1f} {fmt(p['p50_ms']):>8} "
              f"{fmt(p['p99_ms']):>8}   {fmt(p['machine_cpu_pct'], 0) + '%':>8} "
              f"{fmt(p['loadgen_cpu_pct'], 0) + '%':>12}")
    print("cpu busy: the whole machine's CPU use during the phase (all cores = 100%); of it client: the share "
          "taken by this load generator")
    print()
    trivial = phases[0]
    ratios: dict[str, dict[str, float | None]] = {}
    print(f"{'ratio to the trivial view':<40} {'req/s':>9} {'p50':>8} {'p99':>8}")
    for p in phases[1:]:
        r = {"rps": ratio(p["rps"], trivial["rps"]), "p50": ratio(p["p50_ms"], trivial["p50_ms"]),
             "p99": ratio(p["p99_ms"], trivial["p99_ms"])}
        ratios[p["phase"]] = r
        print(f"{p['short'] + ' / trivial':<40} {fmt(r['rps'], 3) + 'x':>9} {fmt(r['p50']) + 'x':>8} "
              f"{fmt(r['p99']) + 'x':>8}")
    print()
    for p in phases:
        line = f"statuses {p['phase']}: " + ", ".join(f"{k}: {v}" for k, v in p["statuses"].items())
        if p["method"] == "PUT":
            line += f"; responses with deploy_enqueued true: {p['deploy_enqueued']}"
        print(line)
        for sample in p["error_samples"]:
            print(f"  error sample: {sample}")
    for key, value in meta.get("checks", {}).items():
        print(f"check {key}: {value}")
    print(f"\nwall time: {meta['wall_seconds']:.1f}s (setup, warm-up, {len(phases)} phases, teardown)")
    return {"meta": meta, "phases": phases, "ratios_to_trivial": ratios}


# --- main -----------------------------------------------------------------------------------------


def _terminate(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks: the server is stopped, rows deleted


def measure(args: argparse.Namespace, root: Path, database_url: str, meta: dict[str, Any]) -> list[dict[str, Any]]:
    """Seed, serve `root`'s code with gunicorn, run the three phases, clean up; returns the phases' results."""
    secret_key = secrets.token_urlsafe(40)
    env = django_env(database_url, secret_key)
    seeded = run_django(SEED_SNIPPET, env, {"clients": args.clients})
    owner, name, token = seeded["owner"], seeded["name"], seeded.pop("token")
    log(f"seeded repository {owner}/{name} and a token scoped to it")
    sha = secrets.token_hex(20)
    api_path = f"/api/v1/repos/{owner}/{name}/previews/{{pr}}"
    put_body = json.dumps({"head_sha": sha, "image": f"localhost/previews-sample:pr-{{pr}}-{sha[:7]}"})
    phases = [
        Phase("trivial", "trivial", f"trivial GET {TRIVIAL_PATH}", "GET", TRIVIAL_PATH),
        Phase("api_get", "API GET", "API GET .../previews/{pr}", "GET", api_path),
        Phase("api_put", "API PUT", "API PUT .../previews/{pr} (idempotent)", "PUT", api_path, put_body),
    ]
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json",
               "Content-Type": "application/json", "Connection": "keep-alive"}
    port = free_port()
    meta["gunicorn_config"] = (f"127.0.0.1:{port}, --workers {WORKERS} --worker-class gthread --threads {THREADS} "
                               f"--keep-alive {KEEP_ALIVE}, access log off, error log at level warning")
    meta["repository"] = f"{owner}/{name}"
    results: list[dict[str, Any]] = []
    server_log = Path(tempfile.mkstemp(prefix="api_load-gunicorn-", suffix=".log")[1])
    proc: subprocess.Popen[bytes] | None = None
    try:
        with server_log.open("wb") as log_file:
            proc = subprocess.Popen(gunicorn_command(port, root), cwd=root,
                                    env=django_env(database_url, secret_key, SERVER_SETTINGS, root),
                                    stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        log(f"gunicorn pid {proc.pid} serving {root} on {meta['gunicorn_config']}")
        meta["startup_seconds"] = wait_until_up(proc, port, server_log)

        created = initial_puts(port, phases[2], args.clients, headers)
        dropped = run_django(DROP_QUEUE_SNIPPET, env)["deleted"]
        meta["checks"] = {"initial_puts": f"{dict(created)} (201 = created); dropped {dropped} queued django-q "
                                           f"tasks from {BENCH_DB}"}
        log(f"created {args.clients} previews; dropped {dropped} queued tasks")

        for phase in phases:
            if args.warmup > 0:
                warm = run_phase(port, phase, args.clients, args.warmup, headers)
                log(f"warm-up {phase.key}: {warm['requests']} requests, {warm['errors']} errors")
            result = run_phase(port, phase, args.clients, args.seconds, headers)
            results.append(result)
            log(f"{phase.key}: {result['requests']} requests, {result['errors']} errors, {result['rps']:.1f} req/s, "
                f"p50 {fmt(result['p50_ms'])} ms, p99 {fmt(result['p99_ms'])} ms")
    finally:
        if proc is not None:
            stop_server(proc)
            meta["server_exit_code"] = proc.returncode
        server_output = tail(server_log, 40)
        server_log.unlink(missing_ok=True)
        try:
            cleanup = run_django(CLEANUP_SNIPPET, env, {"id": seeded["id"]})
            meta.setdefault("checks", {})["after_run"] = (
                f"{cleanup['previews']} previews, highest generation {cleanup['max_generation']} (1 = no redeploy), "
                f"{cleanup['queued_tasks']} queued tasks; previews, repository and token deleted")
        except SystemExit as exc:
            log(f"cleanup failed: {exc}")
            meta.setdefault("checks", {})["after_run"] = (
                f"cleanup FAILED (see above); repository {owner}/{name} and its previews may be left in {BENCH_DB}")
        if server_output.strip():
            log(f"gunicorn log (last lines):\n{server_output}")
    return results


def baseline_tree(ref: str) -> Path:
    """A detached git worktree of `ref` in a temporary directory (removed by `remove_tree`)."""
    path = Path(tempfile.mkdtemp(prefix="api_load-baseline-"))
    path.rmdir()
    result = subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), ref],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"git worktree add {ref} failed: {result.stderr.strip()}")
    return path


def remove_tree(path: Path) -> None:
    subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)], capture_output=True)


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def print_comparison(baseline: str, before: list[dict[str, Any]], after: list[dict[str, Any]]) -> None:
    print(f"\nbefore ({baseline}) and after (this tree), measured back to back in this run")
    header = (f"{'phase':<10} {'':<7} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}   {'req/s / trivial':>15} "
              f"{'p50 / trivial':>13} {'p99 / trivial':>13}")
    print(header)
    print("-" * len(header))
    for label, phases in (("before", before), ("after", after)):
        trivial = phases[0]
        for p in phases:
            print(f"{p['short']:<10} {label:<7} {p['rps']:>9.1f} {fmt(p['p50_ms']):>8} {fmt(p['p99_ms']):>8}   "
                  f"{fmt(ratio(p['rps'], trivial['rps']), 3) + 'x':>15} "
                  f"{fmt(ratio(p['p50_ms'], trivial['p50_ms'])) + 'x':>13} "
                  f"{fmt(ratio(p['p99_ms'], trivial['p99_ms'])) + 'x':>13}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients (default 32)")
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each measured phase (default 15)")
    parser.add_argument("--warmup", type=float, default=2.0, help="untimed seconds per phase before it (default 2)")
    parser.add_argument("--baseline", metavar="REF", help="also measure the code of this git commit first (served "
                        "from a temporary worktree, removed at the end) and print before/after")
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    args = parser.parse_args(argv)
    if not 1 <= args.clients <= 512:
        parser.error("--clients must be between 1 and 512")
    if not 1 <= args.seconds <= 3600 or not 0 <= args.warmup <= 600:
        parser.error("--seconds must be 1..3600 and --warmup 0..600")
    wall_started = time.perf_counter()
    signal.signal(signal.SIGTERM, _terminate)

    database_url = ensure_bench_database(base_database_url())
    log(f"migrating {BENCH_DB}")
    migrate(django_env(database_url, secrets.token_urlsafe(40)))
    before = cpu_snapshot()
    time.sleep(2)
    after = cpu_snapshot()
    background = 100 * (after[0] - before[0]) / max(after[1] - before[1], 1)
    meta: dict[str, Any] = {
        "nproc": len(os.sched_getaffinity(0)), "cpu": cpu_model(platform.processor() or "unknown"),
        "python": platform.python_version(), "gunicorn_version": gunicorn_version(), "gunicorn_workers": WORKERS,
        "gunicorn_threads": THREADS, "clients": args.clients, "seconds": args.seconds, "warmup": args.warmup,
        "database": BENCH_DB, "background_cpu_pct": background, "load_average_before": load_average(),
    }
    baseline_results: list[dict[str, Any]] | None = None
    if args.baseline:
        tree = baseline_tree(args.baseline)
        try:
            log(f"baseline: {args.baseline} in {tree}")
            baseline_meta = dict(meta)
            baseline_results = measure(args, tree, database_url, baseline_meta)
        finally:
            remove_tree(tree)
        meta["baseline"] = {"ref": args.baseline, "checks": baseline_meta.get("checks", {})}
    results = measure(args, ROOT, database_url, meta)
    meta["load_average_after"] = load_average()
    meta["wall_seconds"] = time.perf_counter() - wall_started
    if baseline_results is not None:
        print(f"\nbaseline {args.baseline}:")
        print_report({**meta, "checks": meta["baseline"]["checks"]}, baseline_results)
        print("\nthis tree:")
    report = print_report(meta, results)
    print(f"load average (1, 5, 15 min): {meta['load_average_before']} before the run, "
          f"{meta['load_average_after']} after")
    if baseline_results is not None:
        print_comparison(args.baseline, baseline_results, results)
        report["baseline_phases"] = baseline_results
    if args.json:
        print(json.dumps(report, indent=2))
    failed = any(p["errors"] for p in results + (baseline_results or []))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
