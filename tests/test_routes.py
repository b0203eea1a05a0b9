"""Gateway API routing in the manifest policy and rendering: pure functions, tested directly."""

from __future__ import annotations

import copy

import pytest

from previews import manifests as m
from tests.manifest_bundles import CTX, HOST, LIMIT, deployment, dump, refused_at

GATEWAY = m.GatewayRef(namespace="gateway-system", name="previews")
GW = m.RenderContext(**{**CTX.__dict__, "routing": "gateway", "gateway": GATEWAY})
PARENT = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "namespace": "gateway-system", "name": "previews"}


def route(name: str = "web", **spec) -> dict:
    body = {"parentRefs": [dict(PARENT)], "hostnames": ["PREVIEW_HOST"],
            "rules": [{"backendRefs": [{"name": "web", "port": 80}]}]}
    body.update(spec)
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": name},
            "spec": body}


def rule(**extra) -> list[dict]:
    return [{"backendRefs": [{"name": "web", "port": 80}], **extra}]


def with_filter(route_filter: dict) -> dict:
    return route(rules=rule(filters=[route_filter]))


SERVICE = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
           "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}


# --- rendering -------------------------------------------------------------------------------------


def test_gateway_routing_generates_an_httproute_to_the_repositorys_service():
    objects = m.render_bundle(dump(deployment(), SERVICE), GW, LIMIT)
    assert [o["kind"] for o in objects] == ["Deployment", "Service", "HTTPRoute"]
    generated = objects[-1]
    assert generated["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert generated["metadata"]["name"] == "preview"
    assert generated["metadata"]["namespace"] == "pr-42"
    assert generated["metadata"]["labels"] == CTX.labels
    assert generated["spec"] == {
        "parentRefs": [PARENT],
        "hostnames": [HOST],
        "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                   "backendRefs": [{"name": "web", "port": 80}]}],
    }


def test_a_listener_is_named_when_one_is_configured():
    ctx = m.RenderContext(**{**GW.__dict__, "gateway": m.GatewayRef("gw", "shared", "https")})
    assert m.generated_route(ctx)["spec"]["parentRefs"] == [
        {"group": "gateway.networking.k8s.io", "kind": "Gateway", "namespace": "gw", "name": "shared",
         "sectionName": "https"}]


def test_a_bundles_own_route_gets_the_host_filled_in_and_the_gateway_as_its_only_parent():
    own = route(parentRefs=None, rules=rule(filters=[
        {"type": "RequestRedirect", "requestRedirect": {"hostname": "PREVIEW_HOST", "scheme": "https"}}]))
    del own["spec"]["parentRefs"]
    objects = m.render_bundle(dump(deployment(), own), GW, LIMIT)
    assert [o["kind"] for o in objects] == ["Deployment", "HTTPRoute"]  # none generated beside it
    spec = objects[1]["spec"]
    assert spec["hostnames"] == [HOST]
    assert spec["parentRefs"] == [PARENT]
    assert spec["rules"][0]["filters"][0]["requestRedirect"]["hostname"] == HOST


def test_ingress_routing_still_generates_an_ingress():
    assert m.render_bundle(dump(deployment()), CTX, LIMIT)[-1]["kind"] == "Ingress"


def test_an_unknown_routing_mode_is_an_error():
    with pytest.raises(ValueError, match="routing mode"):
        m.RenderContext(namespace="pr-1", host="h", labels={}, routing="mesh")


# --- what a route may do ----------------------------------------------------------------------------

ALLOWED_ROUTES = [
    ("the plain route", route()),
    ("explicit host and several rules", route(hostnames=[HOST], rules=[
        {"matches": [{"path": {"type": "PathPrefix", "value": "/api"}, "method": "GET",
                      "headers": [{"name": "x-canary", "value": "1"}]}],
         "backendRefs": [{"name": "api", "port": 8080, "weight": 90}, {"name": "api-next", "port": 8080,
                                                                       "weight": 10}],
         "timeouts": {"request": "30s"}},
        {"backendRefs": [{"group": "", "kind": "Service", "name": "web", "port": 80}]}])),
    ("header modifiers", with_filter({"type": "RequestHeaderModifier", "requestHeaderModifier": {
        "set": [{"name": "X-Preview", "value": "pr-42"}], "remove": ["X-Debug"]}})),
    ("a prefix rewrite", with_filter({"type": "URLRewrite", "urlRewrite": {
        "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}}})),
    ("a redirect to https on our own host", with_filter({"type": "RequestRedirect", "requestRedirect": {
        "scheme": "https", "statusCode": 301}})),
    ("a mirror to a Service of this namespace", with_filter({"type": "RequestMirror", "requestMirror": {
        "backendRef": {"name": "shadow", "port": 80}}})),
    ("no parentRefs (filled in)", {**route(), "spec": {k: v for k, v in route()["spec"].items()
                                                       if k != "parentRefs"}}),
]


@pytest.mark.parametrize("bundle", [b for _, b in ALLOWED_ROUTES], ids=[n for n, _ in ALLOWED_ROUTES])
def test_ordinary_routes_are_accepted(bundle):
    assert m.render_bundle(dump(bundle), GW, LIMIT)


# (name, bundle, document number (1-based), field path, what the message says)
HOSTILE_ROUTES = [
    ("a foreign hostname", route(hostnames=["staging.example.com"]), 1, "spec.hostnames[0]",
     "is not this preview's host 'pr-42.preview.example.com'"),
    ("another preview's hostname", route(hostnames=[HOST, "pr-43.preview.example.com"]), 1, "spec.hostnames[1]",
     "not this preview's host"),
    ("a wildcard hostname", route(hostnames=["*.preview.example.com"]), 1, "spec.hostnames[0]",
     "wildcard hostnames are not allowed"),
    ("no hostnames at all", route(hostnames=[]), 1, "spec.hostnames", "would catch every host of the Gateway"),
    ("another Gateway", route(parentRefs=[{**PARENT, "name": "internal"}]), 1, "spec.parentRefs[0].name",
     "is another Gateway: only the configured Gateway gateway-system/previews"),
    ("a Gateway in another namespace", route(parentRefs=[{**PARENT, "namespace": "prod"}]), 1,
     "spec.parentRefs[0].namespace", "is not the Gateway's namespace"),
    ("a parent in the route's own namespace", route(parentRefs=[{"name": "previews"}]), 1,
     "spec.parentRefs[0].namespace", "is not the Gateway's namespace"),
    ("a second parent", route(parentRefs=[PARENT, {**PARENT, "name": "public"}]), 1, "spec.parentRefs[1].name",
     "is another Gateway"),
    ("a parent that is a Service (mesh)", route(parentRefs=[{"group": "", "kind": "Service", "name": "web",
                                                             "namespace": "gateway-system"}]), 1,
     "spec.parentRefs[0].kind", "is not a Gateway"),
    ("another listener", route(parentRefs=[{**PARENT, "sectionName": "admin"}]), 1,
     "spec.parentRefs[0].sectionName", "is another listener"),
    ("a parent port", route(parentRefs=[{**PARENT, "port": 8443}]), 1, "spec.parentRefs[0].port",
     "port is not allowed"),
    ("a backend in another namespace", route(rules=[{"backendRefs": [
        {"name": "db", "namespace": "staging", "port": 5432}]}]), 1, "spec.rules[0].backendRefs[0].namespace",
     "backends must be Services in the preview's own namespace"),
    ("a backend that is not a Service", route(rules=[{"backendRefs": [
        {"group": "example.com", "kind": "Bucket", "name": "b"}]}]), 1, "spec.rules[0].backendRefs[0].kind",
     "routes reach only Services"),
    ("a mirror to a foreign service", with_filter({"type": "RequestMirror", "requestMirror": {
        "backendRef": {"name": "collector", "namespace": "observability", "port": 80}}}), 1,
     "spec.rules[0].filters[0].requestMirror.backendRef.namespace", "own namespace"),
    ("a mirror on a backend to a foreign service", route(rules=[{"backendRefs": [{
        "name": "web", "port": 80, "filters": [{"type": "RequestMirror", "requestMirror": {
            "backendRef": {"name": "x", "namespace": "kube-system", "port": 53}}}]}]}]), 1,
     "spec.rules[0].backendRefs[0].filters[0].requestMirror.backendRef.namespace", "own namespace"),
    ("a redirect to a foreign host", with_filter({"type": "RequestRedirect", "requestRedirect": {
        "hostname": "evil.example.net"}}), 1, "spec.rules[0].filters[0].requestRedirect.hostname",
     "not this preview's host"),
    ("a host rewrite to staging", with_filter({"type": "URLRewrite", "urlRewrite": {
        "hostname": "staging.example.com"}}), 1, "spec.rules[0].filters[0].urlRewrite.hostname",
     "not this preview's host"),
    ("an extension filter", with_filter({"type": "ExtensionRef", "extensionRef": {
        "group": "example.com", "kind": "Lua", "name": "x"}}), 1, "spec.rules[0].filters[0].type",
     "filters of type 'ExtensionRef' are not allowed"),
    ("a regular-expression path", route(rules=rule(matches=[{"path": {"type": "RegularExpression",
                                                                      "value": "/(a+)+$"}}])), 1,
     "spec.rules[0].matches[0].path.type", "not allowed"),
    ("a ReferenceGrant", {"apiVersion": "gateway.networking.k8s.io/v1beta1", "kind": "ReferenceGrant",
                          "metadata": {"name": "open"}, "spec": {"from": [], "to": []}}, 1, "kind",
     "ReferenceGrant is not allowed"),
    ("a Gateway of its own", {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
                              "metadata": {"name": "mine"}}, 1, "kind", "Gateway is not allowed"),
    ("a GatewayClass", {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
                        "metadata": {"name": "mine"}}, 1, "kind", "GatewayClass is not allowed"),
    ("a TCPRoute", {"apiVersion": "gateway.networking.k8s.io/v1alpha2", "kind": "TCPRoute",
                    "metadata": {"name": "raw"}}, 1, "kind", "routed by an HTTPRoute only"),
    ("an Ingress in gateway routing", {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                                       "metadata": {"name": "web"}, "spec": {}}, 1, "kind",
     "routes through the Gateway API (routing: gateway)"),
    ("an unknown spec field", route(useDefaultGateways="All"), 1, "spec.useDefaultGateways",
     "attaches routes to the configured Gateway"),
]


@pytest.mark.parametrize("bundle,document,path,fragment", [c[1:] for c in HOSTILE_ROUTES],
                         ids=[c[0] for c in HOSTILE_ROUTES])
def test_a_hostile_route_is_refused_at_its_document_and_field(bundle, document, path, fragment):
    refused_at(dump(bundle), document, path, fragment, GW)


def test_the_problem_names_the_document_of_the_route():
    refused_at(dump(deployment(), route(hostnames=["*"])), 2, "spec.hostnames[0]", "wildcard", GW)


def test_an_httproute_is_refused_in_ingress_routing():
    refused_at(dump(route()), 1, "kind", "routes through an Ingress (routing: ingress)", CTX)


def test_a_route_is_checked_against_the_configured_gateway_not_a_fixed_one():
    ctx = m.RenderContext(**{**GW.__dict__, "gateway": m.GatewayRef("edge", "public", "https")})
    refused_at(dump(route()), 1, "spec.parentRefs[0].namespace", "edge/public (listener https)", ctx)
    ok = copy.deepcopy(route(parentRefs=[{"namespace": "edge", "name": "public", "sectionName": "https"}]))
    assert m.render_bundle(dump(ok), ctx, LIMIT)[0]["spec"]["parentRefs"] == [
        m.GatewayRef("edge", "public", "https").parent_ref()]


def test_routes_are_prunable_like_every_allowed_kind():
    assert m.ALLOWED_KINDS["HTTPRoute"] == ("gateway.networking.k8s.io/v1",)
    assert set(m.ROUTE_KINDS) <= set(m.ALLOWED_KINDS)


def test_guardrails_admit_the_namespace_they_are_given():
    objects = m.guardrail_objects(GW, m.Guardrails("2", "4Gi", 20, "gateway-system"))
    sources = objects[2]["spec"]["ingress"][0]["from"]
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "gateway-system"}}} in sources
