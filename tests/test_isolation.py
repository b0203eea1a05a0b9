"""Isolation and data, proven on the real node: NetworkPolicies enforced by kube-router, volumes from the
local-path provisioner, a real Postgres in the namespace, and TLS the local CA vouches for.

Connections are made from inside a preview's pod (`kubectl exec` of the sample app's own client), so what
is measured is what a PR's code could do.
"""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
import yaml
from django.test import Client
from kubernetes import client
from kubernetes.stream import stream

from previews import services
from previews.models import Preview
from tests.conftest import ROOT, namespace_exists, node_image, wait_until

pytestmark = [pytest.mark.kube, pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
NODE_IP = "10.244.0.1"  # the real node's address (docs/local-cluster.md)
POSTGRES_IMAGE = "localhost/previews/postgres:15"


@pytest.fixture
def api(real_repo) -> Client:
    return Client(HTTP_AUTHORIZATION=f"Bearer {services.token_create(name='ci', repository=real_repo)[1]}")


def path(repo, pr: int) -> str:
    return f"/api/v1/repos/{repo.owner}/{repo.name}/previews/{pr}"


def deployed(api: Client, repo, pr: int, image: str, sha: str | None = None, timeout: int = 120) -> dict:
    """PUT the PR's preview and wait until the generation asked for is ready (failing the test otherwise)."""
    body = {"head_sha": sha or uuid.uuid4().hex + uuid.uuid4().hex[:8], "image": image}
    response = api.put(path(repo, pr), json.dumps(body), content_type="application/json")
    assert response.status_code in (200, 201), response.content
    generation = response.json()["generation"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = api.get(path(repo, pr) + "?wait=20").json()
        if current["generation"] == generation and current["status"] in ("ready", "failed"):
            assert current["status"] == "ready", current["status_message"]
            return current
    pytest.fail(f"preview {pr} was not ready within {timeout}s: {current}")


def run_in(kube_api, namespace: str, command: list[str], label: str = "app=web") -> tuple[int, str]:
    """Run a command in the first running pod with `label`; (exit code, output)."""
    core = client.CoreV1Api(kube_api)
    pods = [p for p in core.list_namespaced_pod(namespace, label_selector=label).items if p.status.phase == "Running"]
    assert pods, f"no running pod {label} in {namespace}"
    response = stream(core.connect_get_namespaced_pod_exec, pods[0].metadata.name, namespace, command=command,
                      stdout=True, stderr=True, stdin=False, tty=False, _preload_content=False)
    response.run_forever(timeout=30)
    output = response.read_stdout() + response.read_stderr()
    return response.returncode, output


def reaches(kube_api, namespace: str, target: str) -> bool:
    """Whether the preview's pod can open a TCP connection to host:port."""
    code, _output = run_in(kube_api, namespace, ["/previews-sample", "--dial", target])
    return code == 0


def plain_app(kube_api, real_node, namespace: str) -> None:
    """The sample app in a namespace that is not a preview's (staging, the service's own), on the real node."""
    docs = {d["kind"]: d for d in yaml.safe_load_all((ROOT / "previews" / "samples" / "shop.yaml").read_text())}
    web = docs["Deployment"]
    spec = web["spec"]["template"]["spec"]
    spec["nodeSelector"] = dict([real_node.node_selector.split("=")])
    key, effect = real_node.tolerations.split(":")
    spec["tolerations"] = [{"key": key, "operator": "Exists", "effect": effect}]
    spec["containers"][0]["image"] = real_node.sample_image
    web["spec"]["replicas"] = 1
    apps, core = client.AppsV1Api(kube_api), client.CoreV1Api(kube_api)
    core.create_namespaced_config_map(namespace, docs["ConfigMap"])
    core.create_namespaced_service(namespace, docs["Service"])
    apps.create_namespaced_deployment(namespace, web)
    wait_until(lambda: (apps.read_namespaced_deployment("web", namespace).status.ready_replicas or 0) == 1,
               timeout=60, message=f"the sample app in {namespace}")


@pytest.fixture
def node_listener():
    """A TCP port on the node's own address: outside the cluster, as far as a pod can tell."""
    server = socket.create_server((NODE_IP, 0))
    server.settimeout(0.5)
    stop = threading.Event()

    def accept():
        while not stop.is_set():
            try:
                server.accept()[0].close()
            except TimeoutError:
                continue
            except OSError:
                return
    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"{NODE_IP}:{server.getsockname()[1]}"
    stop.set()
    server.close()


def test_a_preview_reaches_only_its_own_namespace_and_dns_and_the_controller_reaches_it(
        api, real_repo, real_node, engine, kube_api, make_namespace, node_listener):
    image = node_image(real_node, "isolation")
    a = deployed(api, real_repo, 31, image)
    b = deployed(api, real_repo, 32, image)
    staging, own = make_namespace("staging"), make_namespace("previews-system")
    for namespace in (staging, own):
        plain_app(kube_api, real_node, namespace)

    # Its own Service, by its short name (so through the cluster DNS), and the controller to it.
    code, output = run_in(kube_api, a["namespace"], ["/previews-sample", "--get", "http://web/healthz"])
    assert (code, output.split("\n")[0]) == (0, "200 OK")
    assert real_node.get(a["url"])[0] == 200
    refused = {
        "preview B": f"web.{b['namespace']}.svc.cluster.local:80",
        "staging": f"web.{staging}.svc.cluster.local:80",
        "the service's own namespace": f"web.{own}.svc.cluster.local:80",
        "the API server": "kubernetes.default.svc.cluster.local:443",
        "an address outside the cluster": node_listener,
    }
    reached = [what for what, target in refused.items() if reaches(kube_api, a["namespace"], target)]
    assert reached == []

    # The same connections once the policies are gone (A's egress, B's ingress): so what refused them was the policy.
    for preview in (a, b):
        client.NetworkingV1Api(kube_api).delete_namespaced_network_policy("preview-isolation", preview["namespace"])
    wait_until(lambda: reaches(kube_api, a["namespace"], refused["preview B"]), timeout=30,
               message="preview B to be reachable without the policy")
    assert reaches(kube_api, a["namespace"], node_listener)


DATA_TEMPLATE_ENV = {"secretRef": {"name": "preview-database"}}


@pytest.fixture
def data_repo(real_repo):
    docs = list(yaml.safe_load_all(real_repo.manifest_template))
    web = next(d for d in docs if d["kind"] == "Deployment")
    web["spec"]["template"]["spec"]["containers"][0]["envFrom"].append(DATA_TEMPLATE_ENV)
    real_repo.manifest_template = yaml.safe_dump_all(docs)
    real_repo.data_mode = "in-namespace"
    real_repo.data_image = POSTGRES_IMAGE
    real_repo.data_storage = "64Mi"
    real_repo.data_migrate_command = "/previews-sample --migrate"
    real_repo.save()
    return real_repo


def rows(real_node, url: str) -> list[str]:
    status, _headers, page = real_node.get(url)
    assert status == 200, page[:300]
    if '<ul id="rows">' not in page:
        return []
    listed = page.split('<ul id="rows">', 1)[1].split("</ul>", 1)[0]
    return [item.split("</li>", 1)[0] for item in listed.split("<li>")[1:]]


def volume_dirs(real_node, namespace: str) -> list[str]:
    state = Path(real_node.ca_file).parent.parent / "node" / "local-path"
    return sorted(p.name for p in state.glob(f"*_{namespace}_*"))


def test_in_namespace_data_end_to_end_migrates_serves_resets_and_leaves_nothing(
        api, data_repo, real_node, engine, kube_api):
    image = node_image(real_node, "with-data")
    a = deployed(api, data_repo, 41, image, timeout=180)
    first = rows(real_node, a["url"])
    assert len(first) == 2 and first[0].startswith("seeded at ") and first[1] == "a second row"
    core = client.CoreV1Api(kube_api)
    [claim] = core.list_namespaced_persistent_volume_claim(a["namespace"]).items
    assert (claim.status.phase, claim.spec.storage_class_name) == ("Bound", "local-path")
    volume = claim.spec.volume_name
    assert volume_dirs(real_node, a["namespace"]), "the volume's directory on the node"

    b = deployed(api, data_repo, 42, image, timeout=180)
    assert reaches(kube_api, a["namespace"], f"preview-postgres.{a['namespace']}.svc.cluster.local:5432")
    assert not reaches(kube_api, a["namespace"], f"preview-postgres.{b['namespace']}.svc.cluster.local:5432")

    # Something written by hand is gone after a reset, which seeds again.
    code, output = run_in(kube_api, a["namespace"], [
        "psql", "-h", "/tmp", "-U", "app", "-d", "app", "-c", "INSERT INTO sample_rows (body) VALUES ('by hand')"],
        label="app.kubernetes.io/name=preview-postgres")
    assert code == 0, output
    assert "by hand" in rows(real_node, a["url"])
    generation = Preview.objects.get(repository=data_repo, pr_number=41).generation
    assert api.post(path(data_repo, 41) + "/reset-data", "{}", content_type="application/json").status_code == 202

    def reseeded():
        current = Preview.objects.get(repository=data_repo, pr_number=41)
        return current.generation > generation and current.status == "ready" and rows(real_node, a["url"])
    after = wait_until(reseeded, timeout=120, message="the reset's seed")
    assert "by hand" not in after and after[0] != first[0] and after[0].startswith("seeded at ")

    for pr in (41, 42):
        assert api.delete(path(data_repo, pr)).status_code == 202
    for preview in (a, b):
        wait_until(lambda ns=preview["namespace"]: not namespace_exists(core, ns), timeout=120,
                   message="the namespace to be gone")
    wait_until(lambda: volume not in {pv.metadata.name for pv in core.list_persistent_volume().items}, timeout=60,
               message="the volume to be deleted")
    wait_until(lambda: not volume_dirs(real_node, a["namespace"]), timeout=60, message="the volume's directory")


@pytest.fixture
def tls_source(real_repo, real_node, kube_api, make_namespace, settings, monkeypatch):
    """A namespace of this test's own holding the repository's TLS Secret (the local wildcard certificate), which
    the service copies from: the test can change it without touching the one Traefik serves."""
    core = client.CoreV1Api(kube_api)
    source = core.read_namespaced_secret(real_node.tls_secret, real_node.tls_secret_namespace)
    namespace = make_namespace("tls-source")
    core.create_namespaced_secret(namespace, client.V1Secret(
        metadata=client.V1ObjectMeta(name=real_node.tls_secret), type="kubernetes.io/tls", data=source.data))
    settings.PREVIEWS_TLS_SECRET_NAMESPACE = namespace
    monkeypatch.setenv("PREVIEWS_TLS_SECRET_NAMESPACE", namespace)
    return namespace


def test_https_to_a_preview_is_vouched_for_by_the_local_ca_and_ingress_namespaces_get_the_secret(
        api, real_repo, real_node, tls_source, engine, kube_api, tmp_path):
    image = node_image(real_node, "tls")
    ready = deployed(api, real_repo, 51, image)
    assert ready["url"].startswith("https://")
    curl = subprocess.run(["curl", "-sS", "--max-time", "10", "--cacert", real_node.ca_file, ready["url"] + "/"],
                          capture_output=True, text=True)
    assert curl.returncode == 0, curl.stderr
    assert '<h1>Pull request #<span id="pr">51</span></h1>' in curl.stdout
    untrusted = subprocess.run(["curl", "-sS", "--max-time", "10", ready["url"] + "/"], capture_output=True,
                               text=True)
    assert untrusted.returncode != 0  # without the local CA the certificate is not trusted: it is checked

    core = client.CoreV1Api(kube_api)
    copy = core.read_namespaced_secret(real_node.tls_secret, ready["namespace"])
    source = core.read_namespaced_secret(real_node.tls_secret, tls_source)
    assert copy.type == "kubernetes.io/tls" and copy.data == source.data
    assert copy.metadata.labels["app.kubernetes.io/managed-by"] == "pr-previews"

    # A renewed certificate in the source reaches the namespace at the next deploy.
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=renewed", "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    core.patch_namespaced_secret(real_node.tls_secret, tls_source, {"stringData": {
        "tls.crt": cert.read_text(), "tls.key": key.read_text()}})
    renewed = core.read_namespaced_secret(real_node.tls_secret, tls_source).data
    again = deployed(api, real_repo, 51, image)
    assert core.read_namespaced_secret(real_node.tls_secret, again["namespace"]).data == renewed
