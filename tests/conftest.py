"""Fixtures for the real components: Postgres (pytest-django), the local
Kubernetes control plane, and a django-q2 cluster in a subprocess."""

from __future__ import annotations

import http.client
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.conf import settings
from kubernetes import client, config

ROOT = Path(__file__).resolve().parent.parent
# The shared Postgres server for preview data (a data role, a shared database, a seeded template).
pytest_plugins = ["tests.data_server"]
TEST_NAMESPACE_LABEL = "previews-test"


def _kubeconfig_path() -> str:
    explicit = os.environ.get("PREVIEWS_TEST_KUBECONFIG")
    if explicit:
        return explicit
    # Start the project's own control plane, or reuse the running one.
    subprocess.run([str(ROOT / "scripts" / "kube"), "up"], check=True)
    out = subprocess.run([str(ROOT / "scripts" / "kube"), "kubeconfig"], check=True, capture_output=True, text=True)
    return out.stdout.strip()


@pytest.fixture(scope="session")
def kubeconfig_path() -> str:
    return _kubeconfig_path()


@pytest.fixture(scope="session")
def kube_api(kubeconfig_path: str) -> client.ApiClient:
    """A `kubernetes` ApiClient for the real local control plane."""
    return config.new_client_from_config(config_file=kubeconfig_path)


@pytest.fixture
def make_namespace(kube_api: client.ApiClient) -> Iterator:
    """Create uniquely named namespaces for one test; delete them afterwards."""
    core = client.CoreV1Api(kube_api)
    created: list[str] = []

    def make(prefix: str = "t", labels: dict[str, str] | None = None) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        body = client.V1Namespace(
            metadata=client.V1ObjectMeta(name=name, labels={TEST_NAMESPACE_LABEL: "1", **(labels or {})})
        )
        core.create_namespace(body)
        created.append(name)
        return name

    yield make
    for name in created:
        try:
            core.delete_namespace(name)
        except client.ApiException as exc:
            if exc.status != 404:
                raise


def delete_namespaces(kube_api, prefix: str) -> None:
    """Ask for every namespace under `prefix` to be deleted (a test's cleanup; one already gone is fine)."""
    core = client.CoreV1Api(kube_api)
    for ns in core.list_namespace().items:
        if ns.metadata.name.startswith(prefix + "-"):
            try:
                core.delete_namespace(ns.metadata.name)
            except client.ApiException as exc:
                if exc.status != 404:
                    raise


def namespace_exists(core: client.CoreV1Api, name: str) -> bool:
    """True while the namespace exists at all (Active or Terminating)."""
    try:
        core.read_namespace(name)
    except client.ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def wait_until(predicate, timeout: float = 30, interval: float = 0.2, message: str = "condition"):
    """Poll `predicate` until it returns a truthy value; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


@pytest.fixture
def qcluster(transactional_db, kubeconfig_path: str) -> Iterator[subprocess.Popen]:
    """A real django-q2 cluster (`manage.py qcluster`) on the test database."""
    proc = start_service(["qcluster"], kubeconfig_path, "qcluster-test.log")
    yield proc
    stop_service(proc)


def _service_env(kubeconfig_path: str) -> dict[str, str]:
    """The environment of a service process (qcluster, watcher) on the test database and local cluster."""
    db = settings.DATABASES["default"]
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings_test",
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "KUBECONFIG": kubeconfig_path,
    }


def start_service(args: list[str], kubeconfig_path: str, log_name: str, **env: str) -> subprocess.Popen:
    """Start `manage.py <args>` in its own session, logging to .state/<log_name>."""
    (ROOT / ".state").mkdir(exist_ok=True)
    log = open(ROOT / ".state" / log_name, "ab")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "manage.py", *args], cwd=ROOT,
                            env={**_service_env(kubeconfig_path), **env}, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    proc.log = log  # type: ignore[attr-defined]
    return proc


def stop_service(proc: subprocess.Popen, timeout: float = 20) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    proc.log.close()  # type: ignore[attr-defined]


@pytest.fixture
def cluster_watcher(transactional_db, kubeconfig_path: str) -> Iterator[subprocess.Popen]:
    """The real cluster watcher (`manage.py watch_cluster`) on the test database."""
    proc = start_service(["watch_cluster"], kubeconfig_path, "watcher-test.log")
    yield proc
    stop_service(proc)


@pytest.fixture
def engine(qcluster, cluster_watcher) -> Iterator[None]:
    """The whole background engine: a real qcluster and the real cluster watcher."""
    yield


class InProcessWatcher:
    """The watcher's loop run by the test itself, on the test's own database connection and transaction."""

    def __init__(self) -> None:
        from previews.engine.watcher import Watcher

        self.watcher = Watcher()
        self.watcher.start()

    def until(self, predicate, timeout: float = 30, message: str = "condition"):
        deadline = time.monotonic() + timeout
        while True:
            self.watcher.step(wait=0.1)
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout}s waiting for {message}")

    def status_of(self, preview, status: str, timeout: float = 30) -> None:
        """Run the watcher until the preview has `status`."""
        def reached():
            preview.refresh_from_db()
            return preview.status == status
        try:
            self.until(reached, timeout, f"{preview} to be {status}")
        except pytest.fail.Exception:
            events = list(preview.events.order_by("created_at", "id").values_list("action", "message"))
            w = self.watcher
            pytest.fail(f"{preview} did not become {status}; it is {preview.status}: {preview.status_message}; "
                        f"events: {events}; the watcher is synced={w.synced} connected={w._connected}, "
                        f"rolling out: {w._rolling_out.get(preview.namespace)}, "
                        f"sees: {w.cache.objects.get(preview.namespace)}")


@pytest.fixture
def watcher(kube_env) -> Iterator[InProcessWatcher]:
    w = InProcessWatcher()
    yield w
    w.watcher.stop()


@pytest.fixture
def kube_env(kubeconfig_path: str, monkeypatch, settings) -> Iterator[None]:
    """Point the service's own Kubernetes gateway (and the processes tests start) at the local control plane."""
    from previews.gateways import kube

    settings.PREVIEWS_KUBECONFIG = kubeconfig_path
    monkeypatch.setenv("KUBECONFIG", kubeconfig_path)
    kube.reset_clients()
    yield
    kube.reset_clients()


@pytest.fixture
def preview_repo(db, kube_env, kube_api) -> Iterator:
    """A repository with a unique namespace prefix and the sample template; its namespaces are deleted after."""
    from previews.models import Repository

    prefix = f"t{uuid.uuid4().hex[:6]}"
    repository = Repository.objects.create(
        owner="acme", name=f"shop-{prefix}", base_domain="preview.example.com", namespace_prefix=prefix,
        manifest_template=(ROOT / "previews" / "samples" / "shop.yaml").read_text(),
        image_name="localhost/previews-sample",
        # The local cluster's kwok stages act on previews.local/* annotations (start-delay): a controller's
        # domain, which a repository must allow like any other (docs/manifest-policy.md).
        annotation_domains="previews.local",
    )
    yield repository
    delete_namespaces(kube_api, prefix)


@pytest.fixture
def fake_github(settings, monkeypatch) -> Iterator:
    """The stateful fake GitHub API on loopback, with the service configured to use it."""
    from tests.fake_github import FakeGitHub

    with FakeGitHub() as fake:
        settings.GITHUB_API_URL = fake.base_url
        settings.GITHUB_TOKEN = "test-token"
        settings.GITHUB_TIMEOUT = 2
        # For subprocesses (a qcluster) started by the test.
        monkeypatch.setenv("GITHUB_API_URL", fake.base_url)
        monkeypatch.setenv("GITHUB_TOKEN", "test-token")
        monkeypatch.setenv("GITHUB_TIMEOUT", "2")
        yield fake


# --- the real node ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RealNode:
    """The local cluster's real node and route controller, as `scripts/node env` describes them."""

    https_port: int
    http_port: int
    ingress_class: str
    node_selector: str
    tolerations: str
    tls_secret: str  # the wildcard certificate's Secret, in the namespace below
    tls_secret_namespace: str
    ca_file: str  # the CA that signed it
    sample_image: str  # the sample app's image in the node's runtime (also in podman's store)

    def connection(self, url: str, timeout: float = 5) -> http.client.HTTPConnection:
        """A connection for a preview URL through the controller on loopback (as a browser resolves *.localhost);
        for https, the certificate is checked against the local CA for the URL's host."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme == "http":
            return http.client.HTTPConnection("127.0.0.1", parts.port or 80, timeout=timeout)
        return _LoopbackHTTPS(parts.hostname, parts.port or 443, timeout=timeout,
                              context=ssl.create_default_context(cafile=self.ca_file))

    def get(self, url: str, timeout: float = 5) -> tuple[int, dict[str, str], str]:
        """GET a preview URL, following no redirect: (status, headers, body); status 0 when nothing answers."""
        parts = urllib.parse.urlsplit(url)
        connection = self.connection(url, timeout)
        try:
            connection.request("GET", parts.path or "/", headers={"Host": parts.netloc})
            response = connection.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read().decode()
        except OSError:
            return 0, {}, ""
        finally:
            connection.close()

    def post(self, url: str) -> int:
        parts = urllib.parse.urlsplit(url)
        connection = self.connection(url)
        try:
            connection.request("POST", parts.path, headers={"Host": parts.netloc, "Content-Length": "0"})
            return connection.getresponse().status
        finally:
            connection.close()


class _LoopbackHTTPS(http.client.HTTPSConnection):
    """HTTPS to a preview's host, name and certificate checked as for that host, connected to loopback."""

    def connect(self) -> None:
        sock = socket.create_connection(("127.0.0.1", self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def _node_env() -> dict[str, str]:
    out = subprocess.run([str(ROOT / "scripts" / "node"), "env"], check=True, capture_output=True, text=True)
    return dict(line.removeprefix("export ").split("=", 1) for line in out.stdout.splitlines() if "=" in line)


@pytest.fixture(scope="session")
def real_node(kubeconfig_path: str, kube_api) -> RealNode:
    """The real node, Ready; a cluster without one fails the test (PREVIEWS_TEST_REAL_NODE=0 skips it instead,
    for a kwok-only cluster a helper runs beside the real one)."""
    if os.environ.get("PREVIEWS_TEST_REAL_NODE") == "0":
        pytest.skip("PREVIEWS_TEST_REAL_NODE=0: this run's cluster has no real node")
    env = _node_env()
    selector = env["PREVIEWS_LOCAL_NODE_SELECTOR"]
    nodes = client.CoreV1Api(kube_api).list_node(label_selector=selector).items
    ready = [n for n in nodes if any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or [])]
    assert ready, f"no Ready node with {selector}: the local cluster's real node is not up (scripts/kube up)"
    image = subprocess.run([str(ROOT / "scripts" / "node"), "sample-image"], check=True, capture_output=True,
                           text=True).stdout.strip()
    return RealNode(int(env["PREVIEWS_PREVIEW_URL_PORT"]), int(env["PREVIEWS_LOCAL_HTTP_PORT"]),
                    env["PREVIEWS_INGRESS_CLASS"], selector, env["PREVIEWS_LOCAL_TOLERATIONS"],
                    env["PREVIEWS_LOCAL_TLS_SECRET"], env["PREVIEWS_TLS_SECRET_NAMESPACE"], env["PREVIEWS_LOCAL_CA"],
                    image)


@pytest.fixture
def real_repo(preview_repo, real_node: RealNode, settings, monkeypatch):
    """A repository whose previews run on the real node, reached through Traefik at https://<ns>.preview.localhost:
    <port> (the local CA's wildcard certificate), for the test process and the service processes it starts."""
    preview_repo.base_domain = "preview.localhost"
    preview_repo.node_selector = real_node.node_selector
    preview_repo.tolerations = real_node.tolerations
    preview_repo.tls_secret_name = real_node.tls_secret
    preview_repo.allow_cached_images = True  # the test images are built into the node's runtime, never pulled
    preview_repo.save()
    values = {"PREVIEWS_INGRESS_CLASS": real_node.ingress_class, "PREVIEWS_PREVIEW_URL_SCHEME": "https",
              "PREVIEWS_PREVIEW_URL_PORT": real_node.https_port, "PREVIEWS_GATEWAY_WAIT_FOR_STATUS": True,
              "PREVIEWS_TLS_SECRET_NAMESPACE": real_node.tls_secret_namespace}
    for name, value in values.items():
        monkeypatch.setenv(name, str(value).lower() if isinstance(value, bool) else str(value))
        setattr(settings, name, value)
    return preview_repo


@pytest.fixture
def fallback_to_live_server(live_server, real_node: RealNode) -> Iterator[str]:
    """Hosts no route claims go to this test's web server (what `make run` does with its own)."""
    subprocess.run([str(ROOT / "scripts" / "node"), "fallback", live_server.url], check=True)
    yield live_server.url
    subprocess.run([str(ROOT / "scripts" / "node"), "fallback", ""], check=True)


def node_image(real_node: RealNode, tag: str, containerfile: str = "") -> str:
    """A variant of the sample image in the node's runtime: another tag of it, or built FROM it with podman."""
    target = f"{real_node.sample_image.rsplit(':', 1)[0]}:{tag}"
    if containerfile:
        engine = subprocess.run([str(ROOT / "scripts" / "image"), "engine"], check=True, capture_output=True,
                                text=True).stdout.split()
        with tempfile.TemporaryDirectory() as context:
            subprocess.run([*engine, "build", "-q", "-t", target, "-f", "-", context], check=True, capture_output=True,
                           input=f"FROM {real_node.sample_image}\n{containerfile}\n", text=True)
        subprocess.run([str(ROOT / "scripts" / "node"), "import", target], check=True, capture_output=True)
    else:
        subprocess.run([str(ROOT / "scripts" / "node"), "tag", real_node.sample_image, target], check=True)
    return target
