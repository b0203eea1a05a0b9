"""The namespace guardrails on the real control plane: the API server accepts them, and the quota holds
storage, claim count and ephemeral storage; DNS egress names only the cluster DNS pods."""

import pytest
from kubernetes import client

from previews import manifests
from previews.gateways import kube
from tests.conftest import wait_until

pytestmark = pytest.mark.kube


@pytest.fixture
def guarded(kube_env, kube_api, make_namespace):
    namespace = make_namespace("guard")
    ctx = manifests.RenderContext(namespace=namespace, host=f"{namespace}.example.com", labels={})
    kube.apply_objects(manifests.guardrail_objects(ctx, manifests.Guardrails(
        "2", "4Gi", 20, "ingress-nginx", quota_storage="3Gi", quota_pvcs=2, quota_ephemeral_storage="1Gi")))
    return namespace


def _pvc(name: str, size: str) -> dict:
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}}}


def _forbidden(call) -> str:
    with pytest.raises(client.ApiException) as info:
        call()
    assert info.value.status == 403
    return info.value.body


def test_the_quota_limits_storage_requests_and_the_number_of_claims(guarded, kube_api):
    core = client.CoreV1Api(kube_api)
    hard = core.read_namespaced_resource_quota("preview-quota", guarded).spec.hard
    assert (hard["requests.storage"], hard["persistentvolumeclaims"]) == ("3Gi", "2")
    assert hard["requests.ephemeral-storage"] == hard["limits.ephemeral-storage"] == "1Gi"

    def quota_counts() -> bool:  # the quota controller fills in `used` shortly after creation
        return core.read_namespaced_resource_quota("preview-quota", guarded).status.used is not None

    wait_until(quota_counts, timeout=30, message="the quota to be counted")
    assert "exceeded quota" in _forbidden(lambda: core.create_namespaced_persistent_volume_claim(
        guarded, _pvc("too-big", "4Gi")))
    core.create_namespaced_persistent_volume_claim(guarded, _pvc("a", "1Gi"))
    core.create_namespaced_persistent_volume_claim(guarded, _pvc("b", "1Gi"))
    assert "persistentvolumeclaims" in _forbidden(lambda: core.create_namespaced_persistent_volume_claim(
        guarded, _pvc("c", "1Gi")))


def test_ephemeral_storage_has_defaults_and_a_ceiling(guarded, kube_api):
    core = client.CoreV1Api(kube_api)

    def pod(name: str, limit: str | None) -> dict:
        resources = {"limits": {"ephemeral-storage": limit}} if limit else {}
        return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                "spec": {"containers": [{"name": "c", "image": "busybox", "resources": resources}]}}

    created = core.create_namespaced_pod(guarded, pod("defaults", None))
    resources = created.spec.containers[0].resources
    assert resources.limits["ephemeral-storage"] == "256Mi" and resources.requests["ephemeral-storage"] == "32Mi"
    assert "ephemeral-storage" in _forbidden(lambda: core.create_namespaced_pod(guarded, pod("greedy", "2Gi")))


def test_dns_egress_is_allowed_only_to_the_cluster_dns(guarded, kube_api):
    policy = client.NetworkingV1Api(kube_api).read_namespaced_network_policy("preview-isolation", guarded)
    port_rules = [rule for rule in policy.spec.egress if rule.ports]
    assert len(port_rules) == 1
    [peer] = port_rules[0].to
    assert peer.namespace_selector.match_labels == {"kubernetes.io/metadata.name": "kube-system"}
    assert peer.pod_selector.match_labels == {"k8s-app": "kube-dns"}
    assert sorted((p.protocol, p.port) for p in port_rules[0].ports) == [("TCP", 53), ("UDP", 53)]
    assert all(rule.to for rule in policy.spec.egress), "no egress rule is open to every destination"


@pytest.mark.django_db
@pytest.mark.parametrize("level", ["baseline", "restricted"])
def test_the_namespace_enforces_the_repositorys_pod_security_level(level):
    from previews import provisioning
    from tests.factories import make_preview, make_repository

    repository = make_repository(pod_security=level, manifest_template=(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n"))
    labels = provisioning.plan_deploy(make_preview(repository)).namespace_labels
    assert labels["pod-security.kubernetes.io/enforce"] == level
    assert labels["pod-security.kubernetes.io/warn"] == "restricted"
