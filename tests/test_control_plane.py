"""The local control plane is a real Kubernetes: controllers, scheduler, kwok nodes."""

import subprocess

import pytest
from kubernetes import client

from tests.conftest import wait_until

pytestmark = pytest.mark.kube


def _deployment(name: str, replicas: int = 2, image: str = "nginx:1.27") -> dict:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "web", "image": image}]},
            },
        },
    }


def _server_side_apply(api: client.ApiClient, namespace: str, body: dict, manager: str, force: bool = False):
    return client.AppsV1Api(api).patch_namespaced_deployment(
        body["metadata"]["name"], namespace, body, field_manager=manager, force=force,
        _content_type="application/apply-patch+yaml",
    )


def test_a_deleted_namespace_passes_through_terminating_and_is_finalized(kube_api, make_namespace):
    core = client.CoreV1Api(kube_api)
    name = make_namespace()
    client.CoreV1Api(kube_api).create_namespaced_config_map(
        name, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="c"), data={"k": "v"})
    )
    core.delete_namespace(name)
    assert core.read_namespace(name).status.phase == "Terminating"

    def gone():
        try:
            core.read_namespace(name)
        except client.ApiException as exc:
            return exc.status == 404
        return False

    wait_until(gone, timeout=120, message=f"namespace {name} to be finalized")


def test_a_deployment_with_two_replicas_becomes_available_with_two_ready_pods(kube_api, make_namespace):
    namespace = make_namespace()
    _server_side_apply(kube_api, namespace, _deployment("web", replicas=2), "previews-test")
    apps = client.AppsV1Api(kube_api)
    wait_until(lambda: (apps.read_namespaced_deployment_status("web", namespace).status.available_replicas or 0) == 2,
               timeout=60, message="2 available replicas")
    pods = client.CoreV1Api(kube_api).list_namespaced_pod(namespace, label_selector="app=web").items
    ready = [p for p in pods if any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])]
    assert len(ready) == 2
    assert all(p.status.phase == "Running" and p.spec.node_name == "kwok-node-0" for p in ready)


def test_server_side_apply_twice_is_a_no_op_and_another_manager_conflicts(kube_api, make_namespace):
    namespace = make_namespace()
    core = client.CoreV1Api(kube_api)

    def apply_config_map(value: str, manager: str):
        body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}, "data": {"mode": value}}
        return core.patch_namespaced_config_map("settings", namespace, body, field_manager=manager,
                                                _content_type="application/apply-patch+yaml")

    # A ConfigMap, because no controller writes to it: any new resourceVersion would be our apply's doing.
    first = apply_config_map("fast", "previews")
    second = apply_config_map("fast", "previews")
    assert second.metadata.resource_version == first.metadata.resource_version

    with pytest.raises(client.ApiException) as info:
        apply_config_map("slow", "someone-else")
    assert info.value.status == 409
    assert core.read_namespaced_config_map("settings", namespace).data == {"mode": "fast"}


def test_server_side_apply_of_an_unchanged_deployment_keeps_its_generation(kube_api, make_namespace):
    namespace = make_namespace()
    first = _server_side_apply(kube_api, namespace, _deployment("api", replicas=1), "previews")
    second = _server_side_apply(kube_api, namespace, _deployment("api", replicas=1), "previews")
    assert second.metadata.generation == first.metadata.generation == 1
    with pytest.raises(client.ApiException) as info:
        _server_side_apply(kube_api, namespace, _deployment("api", replicas=3), "someone-else")
    assert info.value.status == 409


def test_services_and_ingresses_are_accepted_and_readable(kube_api, make_namespace):
    namespace = make_namespace()
    core, net = client.CoreV1Api(kube_api), client.NetworkingV1Api(kube_api)
    core.create_namespaced_service(namespace, {
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
    })
    net.create_namespaced_ingress(namespace, {
        "metadata": {"name": "web"},
        "spec": {"rules": [{"host": "pr-1.preview.example.com", "http": {"paths": [{
            "path": "/", "pathType": "Prefix",
            "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]},
    })
    assert core.read_namespaced_service("web", namespace).spec.cluster_ip.startswith("10.96.")
    assert net.read_namespaced_ingress("web", namespace).spec.rules[0].host == "pr-1.preview.example.com"


def test_kubectl_sees_the_fake_node_ready(kubeconfig_path):
    out = subprocess.run(
        ["kubectl", "--kubeconfig", kubeconfig_path, "get", "nodes", "--no-headers"],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout
    assert "kwok-node-0" in out
    assert " Ready " in out


def test_the_server_reports_a_truthful_version(kube_api):
    version = client.VersionApi(kube_api).get_code()
    assert version.git_version.startswith("v1.34.")
    assert (version.major, version.minor) == ("1", "34")
