"""The container image as it ships, built by scripts/image and run the way deploy/ runs it.

Every container runs as the image's user on a read-only root filesystem with only /tmp writable (a
tmpfs), all capabilities dropped and no privilege escalation, and no init process (as in a Pod). They
use host networking to reach the project's Postgres and local cluster on loopback: migrations into a
fresh database, gunicorn, the worker and the watcher, and a preview deployed through the containerised
web and worker into the local cluster.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
import yaml
from django.conf import settings
from kubernetes import client

from tests.conftest import ROOT, namespace_exists, wait_until

pytestmark = [pytest.mark.image, pytest.mark.kube]
SCRIPT = str(ROOT / "scripts" / "image")
LABEL = "previews-test-image"
# The settings a deployment gives the service (deploy/config.yaml and the secret), for this machine.
SECRET_KEY = "image-smoke-test-only"
# deploy/web.yaml's and worker.yaml's securityContext, and their /tmp emptyDir.
AS_DEPLOYED = ["--read-only", "--tmpfs=/tmp", "--cap-drop=ALL", "--security-opt=no-new-privileges"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def engine() -> list[str]:
    """The engine command scripts/image builds with: docker when an engine answers, else podman."""
    result = subprocess.run([SCRIPT, "engine"], capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        pytest.skip("no container engine can run on this machine, so the image is not tested "
                    f"(scripts/image engine: {result.stderr.strip()})")
    return result.stdout.split()


@pytest.fixture(scope="module")
def image(engine) -> str:
    """The image for the current source (reused while the Dockerfile, requirements and source are unchanged)."""
    result = subprocess.run([SCRIPT, "build"], capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, "scripts/image build failed:\n" + result.stderr[-4000:]
    return result.stdout.split()[-1]


@pytest.fixture(scope="module")
def kube_dir(kubeconfig_path, tmp_path_factory) -> Path:
    """The kubeconfig, and any certificate or key files it names, copied where the image's user can read
    them; mounted read-only at /kube. (The local cluster's kubeconfig embeds its certificates.)"""
    directory = tmp_path_factory.mktemp("kube")
    source = Path(kubeconfig_path)
    kubeconfig = yaml.safe_load(source.read_text())
    file_keys = {"clusters": ("cluster", ["certificate-authority"]),
                 "users": ("user", ["client-certificate", "client-key", "tokenFile"])}
    for section, (inner, keys) in file_keys.items():
        for n, entry in enumerate(kubeconfig.get(section) or []):
            for key in keys:
                if (entry.get(inner) or {}).get(key):
                    path = (source.parent / entry[inner][key]).resolve()
                    copy = directory / f"{section}-{n}-{key}"
                    shutil.copyfile(path, copy)
                    copy.chmod(0o644)
                    entry[inner][key] = f"/kube/{copy.name}"
    (directory / "config").write_text(yaml.safe_dump(kubeconfig))
    (directory / "config").chmod(0o644)
    directory.chmod(0o755)  # only its private parent keeps others out on the host
    return directory


@pytest.fixture(scope="module")
def database():
    """A fresh database for the image to migrate (dropped afterwards), on the project's Postgres."""
    db = settings.DATABASES["default"]
    name = f"{db['NAME'].removeprefix('test_')[:40]}_image_{uuid.uuid4().hex[:6]}"
    admin = {"host": db["HOST"], "port": db["PORT"], "user": db["USER"], "dbname": "postgres", "autocommit": True}
    with psycopg.connect(**admin) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{name}"
    with psycopg.connect(**admin) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Stack:
    """Containers of one test module, all labelled with its run id so nothing is left behind."""

    engine: list[str]
    image: str
    env: dict[str, str]
    kube_dir: Path
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    prefix: str = field(default_factory=lambda: f"i{uuid.uuid4().hex[:6]}")  # of its preview namespaces
    names: dict[str, str] = field(default_factory=dict)
    web_url: str = ""

    def args(self) -> list[str]:
        env = [f"--env={k}={v}" for k, v in self.env.items()]
        return [*AS_DEPLOYED, f"--label={LABEL}={self.run_id}", f"--volume={self.kube_dir}:/kube:ro", *env]

    def run(self, *command: str, extra: tuple[str, ...] = (), timeout: float = 180) -> subprocess.CompletedProcess:
        """Run a command in a throwaway container; return when it exits."""
        return subprocess.run([SCRIPT, "run", "--rm", *self.args(), *extra, self.image, *command],
                              capture_output=True, text=True, timeout=timeout)

    def start(self, role: str, *command: str, extra: tuple[str, ...] = ()) -> str:
        """Start a long-running container in the background."""
        name = f"previews-test-{role}-{self.run_id}"
        result = subprocess.run([SCRIPT, "run", "--detach", f"--name={name}", *self.args(), *extra, self.image,
                                 *command], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        self.names[role] = name
        return name

    def engine_call(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([*self.engine, *args], capture_output=True, text=True, timeout=timeout)

    def logs(self, role: str) -> str:
        result = self.engine_call("logs", self.names[role])
        return result.stdout + result.stderr

    def running(self, role: str) -> bool:
        result = self.engine_call("inspect", "--format={{.State.Running}}", self.names[role])
        return result.stdout.strip() == "true"

    def leftovers(self) -> list[str]:
        result = self.engine_call("ps", "--all", "--quiet", f"--filter=label={LABEL}={self.run_id}")
        return result.stdout.split()

    def remove_all(self) -> None:
        for container in self.leftovers():
            self.engine_call("rm", "--force", "--time=5", container)


@pytest.fixture(scope="module")
def stack(engine, image, database, kube_dir, kube_api) -> Stack:
    stack = Stack(engine=engine, image=image, kube_dir=kube_dir, env={
        "DATABASE_URL": database, "DJANGO_SECRET_KEY": SECRET_KEY, "KUBECONFIG": "/kube/config",
        "Q_WORKERS": "2", "PREVIEWS_ROLLOUT_TIMEOUT": "90",
    })
    yield stack
    stack.remove_all()
    core = client.CoreV1Api(kube_api)
    for ns in core.list_namespace().items:
        if ns.metadata.name.startswith(stack.prefix + "-") and ns.metadata.deletion_timestamp is None:
            try:
                core.delete_namespace(ns.metadata.name)
            except client.ApiException as exc:
                if exc.status not in (404, 409):  # gone, or already being deleted
                    raise


@pytest.fixture(scope="module")
def migrated(stack) -> subprocess.CompletedProcess:
    """deploy/migrate-job.yaml's command, in the image, against the empty database."""
    result = stack.run("sh", "-c", "python manage.py migrate --no-input && python manage.py ensure_schedules")
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture(scope="module")
def web(stack, migrated) -> str:
    port = free_port()
    stack.start("web", extra=(f"--env=GUNICORN_BIND=127.0.0.1:{port}",))
    stack.web_url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        assert stack.running("web"), "the web container exited:\n" + stack.logs("web")
        try:
            with urllib.request.urlopen(stack.web_url + "/healthz", timeout=2):
                return True
        except OSError:
            return False

    wait_until(answers, timeout=60, interval=0.5, message="gunicorn in the image to answer /healthz")
    return stack.web_url


@pytest.fixture(scope="module")
def worker(stack, migrated) -> str:
    return stack.start("worker", "python", "manage.py", "qcluster")


@pytest.fixture(scope="module")
def watcher(stack, migrated) -> str:
    """The cluster watcher (`manage.py watch_cluster`)."""
    listed = stack.run("python", "manage.py", "help", "--commands")
    assert listed.returncode == 0, listed.stderr
    assert "watch_cluster" in listed.stdout.split(), "the image has no watch_cluster command:\n" + listed.stdout
    return stack.start("watcher", "python", "manage.py", "watch_cluster")


def run_image(image: str, *command: str) -> subprocess.CompletedProcess:
    return subprocess.run([SCRIPT, "run", "--rm", *AS_DEPLOYED, image, *command], capture_output=True, text=True,
                          timeout=120)


def call(method: str, url: str, token: str | None = None, body: dict | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, method=method, data=json.dumps(body).encode() if body else None)
    if body is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=130) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def test_the_image_runs_as_uid_and_gid_10001_on_a_read_only_root_filesystem(image):
    result = run_image(image, "sh", "-c", "id -u; id -g; id -gn; stat -c '%u:%g' /app/manage.py /app/staticfiles; "
                                   "touch /app/x 2>&1; touch /x 2>&1; touch /tmp/x && echo tmp writable")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:5] == ["10001", "10001", "previews", "10001:10001", "10001:10001"]
    assert "Read-only file system" in lines[5] and "Read-only file system" in lines[6]
    assert lines[7] == "tmp writable"


def test_the_image_holds_no_compiler_no_tests_and_no_pip(image):
    result = run_image(image, "sh", "-c", "for c in gcc cc c++ make pip pip3; do command -v $c; done; echo ---;"
                                          "ls -A /app")
    found, listing = result.stdout.split("---")
    assert found.split() == [], "found in the image"
    contents = set(listing.split())
    assert {"manage.py", "config", "previews", "dashboard", "staticfiles"} <= contents
    assert not contents & {"tests", "bench", "scripts", ".git", ".venv", ".state", "Makefile"}


def test_migrate_creates_the_schema_in_an_empty_database(migrated, stack):
    assert "Applying previews.0001" in migrated.stdout
    again = stack.run("python", "manage.py", "migrate", "--check", "--no-input")
    assert again.returncode == 0, again.stdout + again.stderr


def test_gunicorn_answers_healthz_and_readyz_with_the_database_and_the_cluster_reachable(web):
    assert call("GET", web + "/healthz") == (200, {"status": "ok"})
    status, body = call("GET", web + "/readyz")
    assert status == 200, body
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["kubernetes"].startswith("ok")


def test_the_worker_command_starts(stack, worker):
    wait_until(lambda: "running" in stack.logs("worker").lower() or not stack.running("worker"), timeout=60,
               message="the worker to report its cluster running")
    assert stack.running("worker"), "the worker container exited:\n" + stack.logs("worker")


def test_the_watcher_command_starts(stack, watcher):
    time.sleep(10)
    assert stack.running("watcher"), "the watcher container exited:\n" + stack.logs("watcher")


def test_a_put_to_the_web_container_is_deployed_by_the_worker_container(stack, web, worker, watcher, kube_api):
    sample = "previews/samples/shop.yaml"
    created = stack.run("python", "manage.py", "shell", "-c", (
        "from previews import services\n"
        "from previews.models import Repository\n"
        f"repository = Repository.objects.create(owner='acme', name='shop-{stack.prefix}',"
        f" base_domain='preview.example.com', namespace_prefix='{stack.prefix}',"
        f" manifest_template=open('{sample}').read(), image_name='localhost/previews-sample')\n"
        "print(services.token_create(name='image-smoke', repository=repository)[1])\n"))
    assert created.returncode == 0, created.stderr
    token = created.stdout.split()[-1]
    url = f"{web}/api/v1/repos/acme/shop-{stack.prefix}/previews/7"

    status, body = call("PUT", url, token, {"head_sha": "a" * 40, "image": "localhost/previews-sample:pr-7-aaaaaaa"})
    assert status == 201, body
    namespace = body["namespace"]

    def settled():
        status, body = call("GET", url + "?wait=30", token)
        assert status == 200, body
        return body if body["status"] in ("ready", "failed") else None

    final = wait_until(settled, timeout=120, interval=0, message="the containerised worker to deploy the preview")
    assert final["status"] == "ready", f"{final['status_message']}\nworker:\n{stack.logs('worker')[-3000:]}"
    core = client.CoreV1Api(kube_api)
    assert namespace_exists(core, namespace)
    [deployment] = client.AppsV1Api(kube_api).list_namespaced_deployment(namespace).items
    assert deployment.spec.template.spec.containers[0].image == "localhost/previews-sample:pr-7-aaaaaaa"
    assert deployment.status.ready_replicas == deployment.spec.replicas

    # The worker's teardown task deletes the namespace and waits up to two minutes for the namespace
    # controller to finalize it (on a busy shared cluster that can take longer): it ends either deleted, or
    # still deleting with the reaper left to watch. Either way the worker is idle again afterwards.
    assert call("DELETE", url, token)[0] == 202

    def teardown_done():
        body = call("GET", url, token)[1]
        return body if body["status"] == "deleted" or "still terminating" in body["status_message"] else None

    done = wait_until(teardown_done, timeout=150, interval=1, message="the containerised worker's teardown")
    try:
        gone = core.read_namespace(namespace).metadata.deletion_timestamp is not None
    except client.ApiException as exc:
        gone = exc.status == 404
    assert gone, done


def test_the_containers_stop_cleanly_within_seconds(stack, web, worker):
    for role in list(stack.names):
        started = time.monotonic()
        stopped = stack.engine_call("stop", "--time=30", stack.names[role])
        elapsed = time.monotonic() - started
        assert stopped.returncode == 0, stopped.stderr
        code = stack.engine_call("inspect", "--format={{.State.ExitCode}}", stack.names[role]).stdout.strip()
        assert elapsed < 15, f"{role} took {elapsed:.1f}s to stop on SIGTERM:\n{stack.logs(role)}"
        assert code == "0", f"{role} exited with {code}:\n{stack.logs(role)}"
        assert stack.engine_call("rm", stack.names[role]).returncode == 0
    assert stack.leftovers() == []
