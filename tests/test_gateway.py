"""Gateway API routing on the real control plane (with the standard-channel CRDs `scripts/kube up` installs).

Readiness from the route's status, written by the real controller (Traefik), is tested with real containers
in tests/test_real_node.py; the decisions themselves in tests/test_route_rollout.py.
"""

from __future__ import annotations

import pytest
import yaml
from kubernetes import client

from previews import manifests, provisioning
from previews.gateways import kube
from previews.gateways.kube import watch as kube_watch
from previews.models import Preview
from tests.conftest import InProcessWatcher, namespace_exists
from tests.test_provisioning import SHA1, SHA2, deploy, upsert
from tests.test_routes import HOSTILE_ROUTES

pytestmark = pytest.mark.kube

GROUP, VERSION, PLURAL = "gateway.networking.k8s.io", "v1", "httproutes"
PARENT = {"group": GROUP, "kind": "Gateway", "namespace": "gateway-system", "name": "previews"}


def without_ingress(template: str) -> str:
    """The sample app without its own Ingress: the same bundle works in both routing modes."""
    return yaml.safe_dump_all([d for d in yaml.safe_load_all(template) if d["kind"] != "Ingress"])


@pytest.fixture
def gateway_repo(preview_repo, settings):
    settings.PREVIEWS_GATEWAY_NAMESPACE = "gateway-system"
    settings.PREVIEWS_GATEWAY_NAME = "previews"
    settings.PREVIEWS_GATEWAY_SECTION = ""
    settings.PREVIEWS_GATEWAY_DATAPLANE_NAMESPACE = ""
    settings.PREVIEWS_GATEWAY_WAIT_FOR_STATUS = False
    preview_repo.routing = "gateway"
    preview_repo.manifest_template = without_ingress(preview_repo.manifest_template)
    preview_repo.save()
    return preview_repo


def read_route(kube_api, namespace: str, name: str = "preview") -> dict:
    return client.CustomObjectsApi(kube_api).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)


def routes_in(kube_api, namespace: str) -> list[str]:
    items = client.CustomObjectsApi(kube_api).list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
    return sorted(i["metadata"]["name"] for i in items["items"])


def ingresses_in(kube_api, namespace: str) -> list[str]:
    return sorted(i.metadata.name for i in client.NetworkingV1Api(kube_api).list_namespaced_ingress(namespace).items)


def admitted(kube_api, namespace: str) -> set[str]:
    policy = client.NetworkingV1Api(kube_api).read_namespaced_network_policy("preview-isolation", namespace)
    return {p.namespace_selector.match_labels["kubernetes.io/metadata.name"]
            for p in policy.spec.ingress[0]._from if p.namespace_selector}


def test_a_gateway_preview_gets_its_httproute_and_the_gateways_namespace_is_admitted(gateway_repo, kube_api,
                                                                                      watcher):
    preview = upsert(gateway_repo)
    assert deploy(preview) == "applied"
    route = read_route(kube_api, preview.namespace)
    assert route["spec"]["hostnames"] == [f"{preview.namespace}.preview.example.com"]
    assert route["spec"]["parentRefs"] == [PARENT]
    assert route["spec"]["rules"][0]["backendRefs"][0]["name"] == "web"
    assert route["spec"]["rules"][0]["backendRefs"][0]["port"] == 80
    assert route["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "pr-previews"
    assert ingresses_in(kube_api, preview.namespace) == []
    assert admitted(kube_api, preview.namespace) == {"gateway-system"}
    preview.refresh_from_db()
    assert preview.rollout == {"Deployment/web": 1}  # not waiting for route status
    watcher.status_of(preview, "ready")
    # The URL is the same in both modes: the API, the dashboard and the PR comment read Preview.url.
    assert preview.url == f"https://{preview.namespace}.preview.example.com"


def test_the_gateways_data_plane_namespace_can_be_set_apart(gateway_repo, kube_api, settings):
    settings.PREVIEWS_GATEWAY_DATAPLANE_NAMESPACE = "envoy-gateway-system"
    preview = upsert(gateway_repo)
    deploy(preview)
    assert admitted(kube_api, preview.namespace) == {"envoy-gateway-system"}


def test_switching_a_repository_to_gateway_prunes_the_ingress_and_adds_the_route(gateway_repo, kube_api):
    gateway_repo.routing = "ingress"
    gateway_repo.save()
    preview = upsert(gateway_repo)
    assert deploy(preview) == "applied"
    assert ingresses_in(kube_api, preview.namespace) == ["preview"]
    assert routes_in(kube_api, preview.namespace) == []
    assert admitted(kube_api, preview.namespace) == {"ingress-nginx"}

    gateway_repo.routing = "gateway"
    gateway_repo.save()
    # Nothing changes until the next deploy (here a push).
    assert ingresses_in(kube_api, preview.namespace) == ["preview"]
    updated = upsert(gateway_repo, sha=SHA2)
    assert deploy(updated) == "applied"
    assert ingresses_in(kube_api, preview.namespace) == []
    assert routes_in(kube_api, preview.namespace) == ["preview"]
    assert admitted(kube_api, preview.namespace) == {"gateway-system"}
    pruned = Preview.objects.get(pk=preview.pk).events.filter(action="pruned").get()
    assert pruned.details["objects"] == ["Ingress/preview"]

    # And back: the route is pruned like any allowed kind.
    gateway_repo.routing = ""  # the service's default, ingress
    gateway_repo.save()
    again = upsert(gateway_repo, sha=SHA1)
    assert deploy(again) == "applied"
    assert routes_in(kube_api, preview.namespace) == []
    assert ingresses_in(kube_api, preview.namespace) == ["preview"]


def test_a_template_may_bring_its_own_route_with_the_placeholder_host(gateway_repo, kube_api):
    own = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "shop"},
           "spec": {"hostnames": ["PREVIEW_HOST"], "rules": [{
               "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
               "filters": [{"type": "RequestHeaderModifier", "requestHeaderModifier": {
                   "set": [{"name": "X-Preview", "value": "yes"}]}}],
               "backendRefs": [{"name": "web", "port": 80}]}]}}
    gateway_repo.manifest_template += "---\n" + yaml.safe_dump(own)
    gateway_repo.save()
    preview = upsert(gateway_repo)
    assert deploy(preview) == "applied"
    assert routes_in(kube_api, preview.namespace) == ["shop"]
    route = read_route(kube_api, preview.namespace, "shop")
    assert route["spec"]["hostnames"] == [f"{preview.namespace}.preview.example.com"]
    assert route["spec"]["parentRefs"] == [PARENT]


@pytest.mark.parametrize("bundle,document,path,fragment", [c[1:] for c in HOSTILE_ROUTES],
                         ids=[c[0] for c in HOSTILE_ROUTES])
def test_a_hostile_route_fails_the_deploy_naming_its_field_and_applies_nothing(gateway_repo, kube_api, bundle,
                                                                               document, path, fragment):
    # The table is written for pr-42; this preview is <prefix>-7.
    namespace = f"{gateway_repo.namespace_prefix}-7"
    docs = list(yaml.safe_load_all(gateway_repo.manifest_template))
    hostile = yaml.safe_dump(bundle).replace("pr-42.", f"{namespace}.")
    gateway_repo.manifest_template = yaml.safe_dump_all(docs) + "---\n" + hostile
    gateway_repo.save()
    preview = upsert(gateway_repo)
    assert deploy(preview) == "failed"
    preview.refresh_from_db()
    assert preview.status_message.startswith("The manifests were refused, nothing was applied:")
    assert f"document {len(docs) + document}, {path}: " in preview.status_message
    assert fragment.replace("pr-42.", f"{namespace}.") in preview.status_message
    assert not namespace_exists(client.CoreV1Api(kube_api), preview.namespace)


def test_a_kind_the_cluster_does_not_serve_is_a_clear_error_and_has_nothing_to_prune(kube_env, monkeypatch,
                                                                                      make_namespace):
    with pytest.raises(kube.KindNotServed, match=r"does not serve HTTPRoute in gateway\.networking\.k8s\.io/v9.*"
                                                 "install the Gateway API CRDs"):
        kube.apply_objects([{"apiVersion": "gateway.networking.k8s.io/v9", "kind": "HTTPRoute",
                             "metadata": {"name": "preview", "namespace": "x"}}])
    # A cluster without the Gateway API CRDs: the prune skips the kind instead of failing the deploy.
    kinds = {**manifests.ALLOWED_KINDS, "HTTPRoute": ("gateway.networking.k8s.io/v9",)}
    assert kube.prune(make_namespace(), "app.kubernetes.io/managed-by=pr-previews", set(), kinds) == []


def test_deploy_fails_with_the_clear_error_when_the_cluster_lacks_the_gateway_api(gateway_repo, monkeypatch):
    monkeypatch.setattr(manifests.rendering, "GATEWAY_API_VERSION", "gateway.networking.k8s.io/v9")
    preview = upsert(gateway_repo)
    assert provisioning.deploy(preview.pk, preview.generation) == "failed"
    preview.refresh_from_db()
    assert "the cluster does not serve HTTPRoute in gateway.networking.k8s.io/v9" in preview.status_message
    assert "routing to ingress" in preview.status_message


def test_the_watcher_counts_a_kind_the_cluster_does_not_serve_as_listed_and_empty(kube_env, db, monkeypatch):
    absent = kube_watch.WatchedKind("Widget", "CustomObjectsApi", "list_cluster_custom_object",
                                    custom=("widgets.example.invalid", "v1", "widgets"), optional=True)
    monkeypatch.setattr(kube_watch, "WATCHED_KINDS", (*kube_watch.WATCHED_KINDS, absent))
    with pytest.raises(kube_watch.KindAbsent):
        kube_watch.list_objects(absent)
    w = InProcessWatcher()
    try:
        w.until(lambda: w.watcher.synced, message="every kind to be listed")
        assert w.watcher.connected
        assert w.watcher._synced["HTTPRoute"].is_set()
    finally:
        w.watcher.stop()
