"""Validation of how a preview is reached: Services, Ingresses, HTTPRoutes."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from previews.manifests.allowlists import (
    BACKEND_REF_FIELDS,
    BACKEND_REF_REASONS,
    DURATION_RE,
    HEADER_MODIFIER_FIELDS,
    HEADER_NAME_RE,
    HTTP_METHODS,
    HTTPROUTE_MATCH_FIELDS,
    HTTPROUTE_PATH_TYPES,
    HTTPROUTE_RULE_FIELDS,
    HTTPROUTE_SPEC_FIELDS,
    HTTPROUTE_SPEC_REASONS,
    HTTPROUTE_VALUE_MATCH_TYPES,
    INGRESS_PATH_RE,
    INGRESS_PATH_TYPES,
    MIRROR_FIELDS,
    PARENT_REF_FIELDS,
    PARENT_REF_REASONS,
    PATH_MODIFIER_TYPES,
    REDIRECT_FIELDS,
    REDIRECT_PORTS,
    REDIRECT_SCHEMES,
    REDIRECT_STATUS_CODES,
    ROUTE_FILTERS,
    SERVICE_PORT_FIELDS,
    SERVICE_SPEC_FIELDS,
    TIMEOUT_FIELDS,
    URL_REWRITE_FIELDS,
)
from previews.manifests.context import RenderContext
from previews.manifests.labels import GATEWAY_GROUP, HOST_PLACEHOLDER
from previews.manifests.objects import as_dict, as_list
from previews.manifests.problems import Problem, only, quoted, quoted_bare
from previews.validators import DNS_SUBDOMAIN_RE

DNS_1035_RE = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")


def validate_service(i: int, obj: dict, spec: dict, ctx: RenderContext) -> Iterator[Problem]:
    name = as_dict(obj.get("metadata")).get("name")
    if isinstance(name, str) and not (len(name) <= 63 and DNS_1035_RE.fullmatch(name)):
        # Service names become DNS labels (and environment variable names): Kubernetes refuses any other.
        yield Problem(i, "metadata.name", f"{quoted(name)} is not a valid Service name: at most 63 lower-case "
                                          "letters, digits and -, starting with a letter (DNS-1035)")
    service_type = spec.get("type", "ClusterIP")
    if service_type != "ClusterIP":
        yield Problem(i, "spec.type", f"Services of type {quoted_bare(service_type)} are not allowed; use "
                                      "ClusterIP and the preview's Ingress")
    if spec.get("externalIPs"):
        yield Problem(i, "spec.externalIPs", "externalIPs are not allowed")
    yield from only(i, "spec", {k: v for k, v in spec.items() if k not in ("externalIPs", "type")},
                    SERVICE_SPEC_FIELDS, "Service spec")
    if spec.get("clusterIP") not in (None, "", "None"):
        yield Problem(i, "spec.clusterIP", "choose no cluster IP (or None for a headless Service)")
    if any(ip not in ("", "None") for ip in as_list(spec.get("clusterIPs"))):
        yield Problem(i, "spec.clusterIPs", "choose no cluster IPs (or None for a headless Service)")
    for k, port in enumerate(as_list(spec.get("ports"))):
        yield from only(i, f"spec.ports[{k}]", as_dict(port), SERVICE_PORT_FIELDS, "Service port",
                        {"nodePort": "node ports are not allowed"})


def validate_ingress(i: int, obj: dict, spec: dict, ctx: RenderContext) -> Iterator[Problem]:
    allowed = (ctx.host, HOST_PLACEHOLDER)
    yield from only(i, "spec", spec, ("rules", "tls", "ingressClassName"), "Ingress spec", {
        "defaultBackend": "a default backend would catch every host; route by the preview's host instead"})
    if spec.get("ingressClassName") not in (None, ctx.ingress_class):
        chosen = repr(ctx.ingress_class) if ctx.ingress_class else "the cluster's default"
        yield Problem(i, "spec.ingressClassName", f"the service sets the Ingress class ({chosen}); leave "
                                                  "ingressClassName out")
    rules = as_list(spec.get("rules"))
    if not rules:
        yield Problem(i, "spec.rules", f"an Ingress needs a rule for host {ctx.host!r} (or {HOST_PLACEHOLDER})")
    for j, rule in enumerate(rules):
        rule = as_dict(rule)
        host = rule.get("host")
        if host not in allowed:
            shown = "an empty host" if not host else quoted(host)
            yield Problem(i, f"spec.rules[{j}].host", f"{shown} is not this preview's host {ctx.host!r} "
                                                      f"(write {HOST_PLACEHOLDER} to have it filled in)")
        yield from only(i, f"spec.rules[{j}]", rule, ("host", "http"), "Ingress rule")
        for k, route in enumerate(as_list(as_dict(rule.get("http")).get("paths"))):
            route = as_dict(route)
            rpath = f"spec.rules[{j}].http.paths[{k}]"
            yield from only(i, rpath, route, ("path", "pathType", "backend"), "Ingress path")
            if route.get("pathType") not in INGRESS_PATH_TYPES:
                yield Problem(i, f"{rpath}.pathType", f"pathType must be one of {', '.join(INGRESS_PATH_TYPES)}")
            path = route.get("path", "/")
            if not isinstance(path, str) or not INGRESS_PATH_RE.fullmatch(path):
                yield Problem(i, f"{rpath}.path", f"{quoted(path)} is not a plain path (/ followed by letters, digits "
                                                  "and . _ ~ / -)")
            yield from only(i, f"{rpath}.backend", as_dict(route.get("backend")), ("service",), "Ingress backend", {
                "resource": "Ingresses route only to Services"})
    for j, tls in enumerate(as_list(spec.get("tls"))):
        yield from only(i, f"spec.tls[{j}]", as_dict(tls), ("hosts", "secretName"), "Ingress TLS")
        for k, host in enumerate(as_list(as_dict(tls).get("hosts"))):
            if host not in allowed:
                yield Problem(i, f"spec.tls[{j}].hosts[{k}]", f"{quoted(host)} is not this preview's host "
                                                              f"{ctx.host!r}")


def _own_host(i: int, path: str, host, ctx: RenderContext, what: str = "hostname") -> Iterator[Problem]:
    if host in (ctx.host, HOST_PLACEHOLDER):
        return
    if isinstance(host, str) and "*" in host:
        yield Problem(i, path, f"wildcard {what}s are not allowed ({quoted(host)}); a preview is reached only at "
                               f"its own host {ctx.host!r}")
        return
    shown = "an empty hostname" if not host else quoted(host)
    yield Problem(i, path, f"{shown} is not this preview's host {ctx.host!r} (write {HOST_PLACEHOLDER} to have it "
                           "filled in)")


def validate_httproute(i: int, obj: dict, spec: dict, ctx: RenderContext) -> Iterator[Problem]:
    yield from only(i, "spec", spec, HTTPROUTE_SPEC_FIELDS, "HTTPRoute spec", HTTPROUTE_SPEC_REASONS)
    for j, parent in enumerate(as_list(spec.get("parentRefs"))):
        yield from _validate_parent_ref(i, f"spec.parentRefs[{j}]", as_dict(parent), ctx)
    hostnames = as_list(spec.get("hostnames"))
    if not hostnames:
        # Without hostnames a route matches every host its Gateway listens for: staging's, other previews'.
        yield Problem(i, "spec.hostnames", f"an HTTPRoute needs hostnames [{ctx.host!r}] (or {HOST_PLACEHOLDER}); "
                                           "without them it would catch every host of the Gateway")
    for k, host in enumerate(hostnames):
        yield from _own_host(i, f"spec.hostnames[{k}]", host, ctx)
    for j, rule in enumerate(as_list(spec.get("rules"))):
        rule = as_dict(rule)
        rpath = f"spec.rules[{j}]"
        yield from only(i, rpath, rule, HTTPROUTE_RULE_FIELDS, "HTTPRoute rule")
        for k, match in enumerate(as_list(rule.get("matches"))):
            yield from _validate_route_match(i, f"{rpath}.matches[{k}]", as_dict(match))
        for k, route_filter in enumerate(as_list(rule.get("filters"))):
            yield from _validate_route_filter(i, f"{rpath}.filters[{k}]", as_dict(route_filter), ctx)
        for k, backend in enumerate(as_list(rule.get("backendRefs"))):
            backend = as_dict(backend)
            bpath = f"{rpath}.backendRefs[{k}]"
            yield from _validate_backend_ref(i, bpath, backend, BACKEND_REF_FIELDS)
            for m, route_filter in enumerate(as_list(backend.get("filters"))):
                yield from _validate_route_filter(i, f"{bpath}.filters[{m}]", as_dict(route_filter), ctx)
        timeouts = as_dict(rule.get("timeouts"))
        yield from only(i, f"{rpath}.timeouts", timeouts, TIMEOUT_FIELDS, "HTTPRoute timeouts")
        for key, value in timeouts.items():
            if key in TIMEOUT_FIELDS and (not isinstance(value, str) or not DURATION_RE.fullmatch(value)):
                yield Problem(i, f"{rpath}.timeouts.{key}", f"{quoted(value)} is not a duration such as 30s or 1m")


def _validate_parent_ref(i: int, path: str, parent: dict, ctx: RenderContext) -> Iterator[Problem]:
    """Only the configured Gateway (and listener) may be a parent; leaving parentRefs out has it filled in."""
    yield from only(i, path, parent, PARENT_REF_FIELDS, "parentRef", PARENT_REF_REASONS)
    gateway = ctx.gateway
    hint = f"only the configured Gateway {gateway} may be a parent (leave parentRefs out to have it filled in)"
    if parent.get("group", GATEWAY_GROUP) != GATEWAY_GROUP or parent.get("kind", "Gateway") != "Gateway":
        yield Problem(i, f"{path}.kind", f"{quoted(parent.get('kind'))} is not a Gateway: {hint}")
    # An omitted namespace means the route's own, where no Gateway of ours lives.
    if parent.get("namespace") != gateway.namespace:
        yield Problem(i, f"{path}.namespace", f"{quoted(parent.get('namespace'))} is not the Gateway's namespace: "
                                              f"{hint}")
    if parent.get("name") != gateway.name:
        yield Problem(i, f"{path}.name", f"{quoted(parent.get('name'))} is another Gateway: {hint}")
    if parent.get("sectionName") not in (None, gateway.section or None):
        yield Problem(i, f"{path}.sectionName", f"{quoted(parent.get('sectionName'))} is another listener: {hint}")


def _validate_route_match(i: int, path: str, match: dict) -> Iterator[Problem]:
    yield from only(i, path, match, HTTPROUTE_MATCH_FIELDS, "HTTPRoute match")
    if "path" in match:
        route_path = as_dict(match.get("path"))
        yield from only(i, f"{path}.path", route_path, ("type", "value"), "path match")
        if route_path.get("type", "PathPrefix") not in HTTPROUTE_PATH_TYPES:
            yield Problem(i, f"{path}.path.type", f"path matches of type {quoted(route_path.get('type'))} are not "
                                                  f"allowed; use {' or '.join(HTTPROUTE_PATH_TYPES)}")
        value = route_path.get("value", "/")
        if not isinstance(value, str) or not INGRESS_PATH_RE.fullmatch(value):
            yield Problem(i, f"{path}.path.value", f"{quoted(value)} is not a plain path (/ followed by letters, "
                                                   "digits and . _ ~ / -)")
    for group in ("headers", "queryParams"):
        for k, item in enumerate(as_list(match.get(group))):
            item = as_dict(item)
            yield from only(i, f"{path}.{group}[{k}]", item, ("type", "name", "value"), "value match")
            if item.get("type", "Exact") not in HTTPROUTE_VALUE_MATCH_TYPES:
                yield Problem(i, f"{path}.{group}[{k}].type", f"{quoted(item.get('type'))} matches are not allowed; "
                                                              "use Exact")
    if "method" in match and match["method"] not in HTTP_METHODS:
        yield Problem(i, f"{path}.method", f"{quoted(match['method'])} is not an HTTP method")


def _validate_backend_ref(i: int, path: str, backend: dict, allowed: Iterable[str]) -> Iterator[Problem]:
    """A Service of the preview's own namespace: no namespace field, no other kind."""
    yield from only(i, path, backend, allowed, "backendRef", BACKEND_REF_REASONS)
    if backend.get("group") not in (None, "") or backend.get("kind", "Service") != "Service":
        yield Problem(i, f"{path}.kind", f"{quoted(backend.get('kind'))} is not allowed: routes reach only Services "
                                         "in the preview's own namespace")
    name = backend.get("name")
    if not isinstance(name, str) or not DNS_SUBDOMAIN_RE.fullmatch(name):
        yield Problem(i, f"{path}.name", f"{quoted(name)} is not a Service name")


def _validate_route_filter(i: int, path: str, route_filter: dict, ctx: RenderContext) -> Iterator[Problem]:
    kind = route_filter.get("type")
    if kind not in ROUTE_FILTERS:
        yield Problem(i, f"{path}.type", f"filters of type {quoted(kind)} are not allowed; allowed: "
                                         f"{', '.join(ROUTE_FILTERS)}")
        return
    key = ROUTE_FILTERS[kind]
    yield from only(i, path, route_filter, ("type", key), f"{kind} filter")
    settings_path = f"{path}.{key}"
    config = as_dict(route_filter.get(key))
    if kind in ("RequestHeaderModifier", "ResponseHeaderModifier"):
        yield from only(i, settings_path, config, HEADER_MODIFIER_FIELDS, "header modifier")
        for op in ("set", "add"):
            for k, header in enumerate(as_list(config.get(op))):
                yield from only(i, f"{settings_path}.{op}[{k}]", as_dict(header), ("name", "value"), "header")
        for op in ("set", "add", "remove"):
            for k, header in enumerate(as_list(config.get(op))):
                name = header if op == "remove" else as_dict(header).get("name")
                if not isinstance(name, str) or not HEADER_NAME_RE.fullmatch(name):
                    yield Problem(i, f"{settings_path}.{op}[{k}]", f"{quoted(name)} is not a header name")
    elif kind == "URLRewrite":
        yield from only(i, settings_path, config, URL_REWRITE_FIELDS, "URLRewrite")
        if "hostname" in config:
            yield from _own_host(i, f"{settings_path}.hostname", config["hostname"], ctx)
        yield from _validate_path_modifier(i, f"{settings_path}.path", config.get("path"))
    elif kind == "RequestRedirect":
        yield from only(i, settings_path, config, REDIRECT_FIELDS, "RequestRedirect")
        # A redirect elsewhere would make the preview's host an open redirect.
        if "hostname" in config:
            yield from _own_host(i, f"{settings_path}.hostname", config["hostname"], ctx)
        if config.get("scheme", "https") not in REDIRECT_SCHEMES:
            yield Problem(i, f"{settings_path}.scheme", f"redirect to http or https only, not "
                                                        f"{quoted(config.get('scheme'))}")
        if config.get("port", 443) not in REDIRECT_PORTS:
            yield Problem(i, f"{settings_path}.port", "redirect to port 80 or 443 only (or leave the port out)")
        if config.get("statusCode", 302) not in REDIRECT_STATUS_CODES:
            yield Problem(i, f"{settings_path}.statusCode", f"{quoted(config.get('statusCode'))} is not a redirect "
                                                            "status code")
        yield from _validate_path_modifier(i, f"{settings_path}.path", config.get("path"))
    else:  # RequestMirror: a copy of the traffic may go only to a Service of this namespace
        yield from only(i, settings_path, config, MIRROR_FIELDS, "RequestMirror")
        if not isinstance(config.get("backendRef"), dict):
            yield Problem(i, f"{settings_path}.backendRef", "a mirror needs a backendRef to a Service in the "
                                                            "preview's own namespace")
        else:
            yield from _validate_backend_ref(i, f"{settings_path}.backendRef", config["backendRef"],
                                             ("group", "kind", "name", "port"))


def _validate_path_modifier(i: int, path: str, modifier) -> Iterator[Problem]:
    if modifier is None:
        return
    modifier = as_dict(modifier)
    kind = modifier.get("type")
    if kind not in PATH_MODIFIER_TYPES:
        yield Problem(i, f"{path}.type", f"{quoted(kind)} is not allowed; use {' or '.join(PATH_MODIFIER_TYPES)}")
        return
    key = PATH_MODIFIER_TYPES[kind]
    yield from only(i, path, modifier, ("type", key), "path modifier")
    value = modifier.get(key)
    if not isinstance(value, str) or not INGRESS_PATH_RE.fullmatch(value):
        yield Problem(i, f"{path}.{key}", f"{quoted(value)} is not a plain path (/ followed by letters, digits and "
                                          ". _ ~ / -)")
