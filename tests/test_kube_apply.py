"""How the gateway applies a bundle: in two waves (what pods use, then what creates pods), each wave's
objects concurrently, and a failure reported for the first failing object in manifest order."""

import pytest
from kubernetes import client

from previews.gateways import errors, kube


def _obj(kind: str, name: str, namespace: str = "ns", api_version: str = "v1", **rest) -> dict:
    return {"apiVersion": api_version, "kind": kind, "metadata": {"name": name, "namespace": namespace}, **rest}


def _names(waves: list[list[dict]]) -> list[list[str]]:
    return [[f"{o['kind']}/{o['metadata']['name']}" for o in wave] for wave in waves]


def test_pod_creating_kinds_come_after_everything_else_in_manifest_order():
    objects = [_obj("Deployment", "web", api_version="apps/v1"), _obj("ConfigMap", "config"),
               _obj("Job", "migrate", api_version="batch/v1"), _obj("Service", "web"),
               _obj("StatefulSet", "db", api_version="apps/v1"), _obj("Secret", "token"),
               _obj("CronJob", "nightly", api_version="batch/v1"), _obj("PersistentVolumeClaim", "data")]
    assert _names(kube.apply_waves(objects)) == [
        ["ConfigMap/config", "Service/web", "Secret/token", "PersistentVolumeClaim/data"],
        ["Deployment/web", "Job/migrate", "StatefulSet/db", "CronJob/nightly"],
    ]


def test_a_bundle_without_workloads_is_one_wave_and_nothing_is_no_wave():
    assert _names(kube.apply_waves([_obj("ConfigMap", "a"), _obj("Service", "b")])) == [["ConfigMap/a", "Service/b"]]
    assert kube.apply_waves([]) == []


def _configmap(namespace: str, name: str, data: dict) -> dict:
    return _obj("ConfigMap", name, namespace, data=data)


def _deployment(namespace: str, name: str) -> dict:
    labels = {"app": name}
    return _obj("Deployment", name, namespace, api_version="apps/v1", spec={
        "replicas": 1, "selector": {"matchLabels": labels},
        "template": {"metadata": {"labels": labels},
                     "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]}}})


@pytest.mark.kube
def test_a_concurrent_apply_creates_every_object_and_returns_the_workloads_generations(kube_env, kube_api,
                                                                                        make_namespace):
    namespace = make_namespace("apply")
    objects = [_configmap(namespace, f"c{i}", {"i": str(i)}) for i in range(8)] + [_deployment(namespace, "web")]
    assert kube.apply_objects(objects) == {"Deployment/web": 1}
    core = client.CoreV1Api(kube_api)
    names = {c.metadata.name for c in core.list_namespaced_config_map(namespace).items}
    assert {f"c{i}" for i in range(8)} <= names


@pytest.mark.kube
def test_when_objects_of_a_wave_fail_the_first_in_manifest_order_is_reported_and_later_waves_are_not_applied(
        kube_env, kube_api, make_namespace):
    namespace = make_namespace("apply")
    bad_name = "Not_A_Valid_Name"  # refused by the API server (422), not by us
    objects = [_configmap(namespace, "fine", {}), _configmap(namespace, bad_name + "1", {}),
               _configmap(namespace, bad_name + "2", {}), _deployment(namespace, "web")]
    with pytest.raises(errors.GatewayError, match=f"apply ConfigMap {namespace}/{bad_name}1") as info:
        kube.apply_objects(objects)
    assert info.value.status == 422
    core = client.CoreV1Api(kube_api)
    assert [c.metadata.name for c in core.list_namespaced_config_map(namespace).items
            if c.metadata.name == "fine"] == ["fine"]
    assert client.AppsV1Api(kube_api).list_namespaced_deployment(namespace).items == []
