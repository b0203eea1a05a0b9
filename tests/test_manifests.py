"""Rendering, the policy's refusals by document and field, bounds, guardrails and what the service adds: pure
functions, tested directly (the allow-list class by class: test_manifest_allowlist.py)."""

import dataclasses

import pytest
import yaml

from previews import manifests as m
from tests.manifest_bundles import (
    CONFIG,
    CTX,
    HOST,
    LIMIT,
    SAMPLE,
    deployment,
    dump,
    problems_of,
)

# --- rendering --------------------------------------------------------------------------------


def test_the_sample_renders_into_the_preview_namespace_with_our_labels():
    objects = m.render_bundle(SAMPLE, CTX, LIMIT)
    assert [o["kind"] for o in objects] == ["ConfigMap", "Deployment", "Service", "Ingress"]
    assert {o["metadata"]["namespace"] for o in objects} == {"pr-42"}
    assert all(o["metadata"]["labels"][m.MANAGED_BY_LABEL] == m.MANAGED_BY_VALUE for o in objects)


def test_the_pr_image_replaces_the_staging_tag_by_image_name():
    deployment_ = m.render_bundle(SAMPLE, CTX, LIMIT)[1]
    image = deployment_["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == "localhost/previews-sample:pr-42-abc1234"


def test_images_not_overridden_keep_their_staging_reference():
    text = dump(deployment(name="api", image="ghcr.io/demo/api:staging"))
    rendered = m.render_bundle(text, CTX, LIMIT)[0]
    assert rendered["spec"]["template"]["spec"]["containers"][0]["image"] == "ghcr.io/demo/api:staging"


@pytest.mark.parametrize(
    "reference,images,expected",
    [
        ("nginx:1.27", {"nginx": "nginx:1.28"}, "nginx:1.28"),
        ("ghcr.io/a/b@sha256:" + "1" * 64, {"ghcr.io/a/b": "ghcr.io/a/b:pr-1"}, "ghcr.io/a/b:pr-1"),
        ("ghcr.io/a/b:v1", {"ghcr.io/a/c": "ghcr.io/a/c:pr"}, "ghcr.io/a/b:v1"),
        ("ghcr.io/a/bb:v1", {"ghcr.io/a/b": "ghcr.io/a/b:pr"}, "ghcr.io/a/bb:v1"),
    ],
)
def test_image_override_matches_whole_names_only(reference, images, expected):
    assert m.override_image(reference, images) == expected


def test_init_containers_are_overridden_too():
    init = [{"name": "i", "image": "localhost/previews-sample:old"}]
    text = dump(deployment(pod_spec_extra={"initContainers": init}))
    spec = m.render_bundle(text, CTX, LIMIT)[0]["spec"]["template"]["spec"]
    assert spec["initContainers"][0]["image"] == "localhost/previews-sample:pr-42-abc1234"


def test_the_placeholder_host_becomes_the_preview_host():
    ingress = m.render_bundle(SAMPLE, CTX, LIMIT)[3]
    assert ingress["spec"]["rules"][0]["host"] == HOST


def test_an_ingress_is_generated_when_the_bundle_has_none():
    objects = m.render_bundle(dump(deployment()), CTX, LIMIT)
    ingress = objects[-1]
    assert ingress["kind"] == "Ingress"
    assert ingress["spec"]["rules"][0]["host"] == HOST
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "web", "port": {"number": 80}}
    assert "tls" not in ingress["spec"]


def test_the_generated_ingress_has_tls_when_a_secret_is_configured():
    ctx = m.RenderContext(namespace="pr-42", host=HOST, labels={}, tls_secret_name="wildcard-tls",
                          ingress_class="nginx")
    ingress = m.generated_ingress(ctx)
    assert ingress["spec"]["tls"] == [{"hosts": [HOST], "secretName": "wildcard-tls"}]
    assert ingress["spec"]["ingressClassName"] == "nginx"


def test_rendering_does_not_change_the_input():
    objects = m.parse_bundle(SAMPLE, LIMIT)
    before = yaml.safe_dump_all(objects)
    m.render(objects, CTX)
    assert yaml.safe_dump_all(objects) == before


def test_parsing_the_same_text_again_gives_a_fresh_copy_each_time():
    first = m.parse_bundle(SAMPLE, LIMIT)
    first[0]["metadata"]["name"] = "changed by the first caller"
    second = m.parse_bundle(SAMPLE, LIMIT)
    assert second[0]["metadata"]["name"] != "changed by the first caller"
    assert second == m.parse_bundle(SAMPLE, LIMIT)


def test_a_refused_bundle_is_refused_again_when_parsed_again():
    for _ in range(2):
        with pytest.raises(m.ManifestError, match="aliases"):
            m.parse_bundle("a: &x 1\nb: *x\n", LIMIT)


def test_list_items_are_expanded():
    text = dump({"apiVersion": "v1", "kind": "List", "items": [deployment(), {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}]})
    kinds = [o["kind"] for o in m.render_bundle(text, CTX, LIMIT)]
    assert kinds == ["Deployment", "ConfigMap", "Ingress"]


def test_an_explicit_matching_namespace_is_accepted():
    assert m.render_bundle(dump(deployment(metadata={"namespace": "pr-42"})), CTX, LIMIT)


def test_guardrails_are_a_quota_a_limit_range_and_a_default_deny_network_policy():
    objects = m.guardrail_objects(CTX, m.Guardrails("2", "4Gi", 20, "ingress-nginx"))
    assert [o["kind"] for o in objects] == ["ResourceQuota", "LimitRange", "NetworkPolicy"]
    policy = objects[2]["spec"]
    assert policy["podSelector"] == {} and policy["policyTypes"] == ["Ingress", "Egress"]
    sources = policy["ingress"][0]["from"]
    assert {"podSelector": {}} in sources
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}} in sources
    assert objects[0]["spec"]["hard"]["services.loadbalancers"] == "0"


# --- the policy: every bad bundle is refused with the document and the field ---------------------

BAD_BUNDLES = [
    ("cluster-scoped kind", dump({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                                  "metadata": {"name": "x"}}), "document 1, kind: ClusterRole is not allowed"),
    ("Namespace", dump({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}}),
     "Namespace is not allowed: the service creates the namespace itself"),
    ("NetworkPolicy", dump({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                            "metadata": {"name": "x"}}), "NetworkPolicy is not allowed"),
    ("ResourceQuota", dump({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "x"}}),
     "ResourceQuota is not allowed"),
    ("LimitRange", dump({"apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "x"}}),
     "LimitRange is not allowed"),
    ("Role", dump({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "x"}}),
     "Role is not allowed"),
    ("RoleBinding", dump({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                          "metadata": {"name": "x"}}), "RoleBinding is not allowed"),
    ("unknown kind", dump({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "x"}}),
     "Widget is not allowed; allowed kinds:"),
    ("foreign namespace", dump(deployment(metadata={"namespace": "staging"})),
     "document 1, metadata.namespace: objects must stay in the preview's namespace; 'staging'"),
    ("privileged container", dump(deployment(container_extra={"securityContext": {"privileged": True}})),
     "spec.template.spec.containers[0].securityContext.privileged: privileged containers are not allowed"),
    ("privileged init container", dump(deployment(pod_spec_extra={"initContainers": [
        {"name": "i", "image": "busybox", "securityContext": {"privileged": True}}]})),
     "spec.template.spec.initContainers[0].securityContext.privileged"),
    ("privileged ephemeral container", dump(deployment(pod_spec_extra={"ephemeralContainers": [
        {"name": "e", "image": "busybox", "securityContext": {"privileged": True}}]})),
     "spec.template.spec.ephemeralContainers[0].securityContext.privileged"),
    ("hostPath", dump(deployment(pod_spec_extra={"volumes": [{"name": "v", "hostPath": {"path": "/"}}]})),
     "spec.template.spec.volumes[0].hostPath: hostPath volumes are not allowed"),
    ("hostNetwork", dump(deployment(pod_spec_extra={"hostNetwork": True})),
     "spec.template.spec.hostNetwork: hostNetwork is not allowed"),
    ("hostPID", dump(deployment(pod_spec_extra={"hostPID": True})), "hostPID is not allowed"),
    ("hostIPC", dump(deployment(pod_spec_extra={"hostIPC": True})), "hostIPC is not allowed"),
    ("hostPort", dump(deployment(container_extra={"ports": [{"containerPort": 80, "hostPort": 80}]})),
     "containers[0].ports[0].hostPort: hostPort is not allowed"),
    ("privileged pod in a CronJob", dump({
        "apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "cj"},
        "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": {"spec": {"containers": [
            {"name": "c", "image": "busybox", "securityContext": {"privileged": True}}]}}}}}}),
     "spec.jobTemplate.spec.template.spec.containers[0].securityContext.privileged"),
    ("hostPath in a Job", dump({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"},
        "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox"}],
                                       "volumes": [{"name": "v", "hostPath": {"path": "/etc"}}]}}}}),
     "spec.template.spec.volumes[0].hostPath"),
    ("hostNetwork in a StatefulSet", dump({
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "s"},
        "spec": {"serviceName": "s", "selector": {}, "template": {"spec": {
            "hostNetwork": True, "containers": [{"name": "c", "image": "redis"}]}}}}),
     "hostNetwork is not allowed"),
    ("LoadBalancer Service", dump({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
                                   "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}}),
     "spec.type: Services of type LoadBalancer are not allowed"),
    ("NodePort Service", dump({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
                               "spec": {"type": "NodePort", "ports": [{"port": 80}]}}),
     "Services of type NodePort are not allowed"),
    ("ExternalName Service", dump({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
                                   "spec": {"type": "ExternalName", "externalName": "db.internal"}}),
     "Services of type ExternalName are not allowed"),
    ("externalIPs", dump({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
                          "spec": {"externalIPs": ["1.2.3.4"], "ports": [{"port": 80}]}}),
     "spec.externalIPs: externalIPs are not allowed"),
    ("foreign Ingress host", dump({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                                   "metadata": {"name": "i"}, "spec": {"rules": [{"host": "shop.example.com"}]}}),
     "spec.rules[0].host: 'shop.example.com' is not this preview's host"),
    ("empty Ingress host", dump({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                                 "metadata": {"name": "i"}, "spec": {"rules": [{"http": {}}]}}),
     "spec.rules[0].host: an empty host is not this preview's host"),
    ("wildcard Ingress host", dump({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                                    "metadata": {"name": "i"}, "spec": {"rules": [{"host": "*.example.com"}]}}),
     "'*.example.com' is not this preview's host"),
    ("Ingress default backend", dump({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                                      "metadata": {"name": "i"}, "spec": {"defaultBackend": {}, "rules": [
                                          {"host": HOST}]}}), "spec.defaultBackend"),
    ("TLS for another host", dump({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                                   "metadata": {"name": "i"}, "spec": {"rules": [{"host": HOST}],
                                                                        "tls": [{"hosts": ["evil.example"]}]}}),
     "spec.tls[0].hosts[0]: 'evil.example' is not this preview's host"),
    ("snippet annotation", dump({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {
        "name": "i", "annotations": {"nginx.ingress.kubernetes.io/configuration-snippet": "deny all;"}},
        "spec": {"rules": [{"host": HOST}]}}),
     "metadata.annotations[nginx.ingress.kubernetes.io/configuration-snippet]: this Ingress annotation is not "
     "allowed"),
    ("auth-url annotation", dump({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {
        "name": "i", "annotations": {"nginx.ingress.kubernetes.io/auth-url": "http://x"}},
        "spec": {"rules": [{"host": HOST}]}}), "this Ingress annotation is not allowed"),
    ("bare Pod", dump({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}}),
     "Pod is not allowed: bare Pods are not allowed"),
    ("wrong apiVersion", dump({**deployment(), "apiVersion": "extensions/v1beta1"}),
     "apiVersion: Deployment must use apiVersion apps/v1, not 'extensions/v1beta1'"),
    ("missing name", dump({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}}),
     "metadata.name: None is not a valid object name"),
    ("bad image", dump(deployment(image="localhost/previews-sample:tag with space")), "is not an image reference"),
    ("duplicate object", dump(deployment(), deployment()), "document 2, metadata.name: Deployment 'web' appears twice"),
    ("privileged pod inside a List", dump({"apiVersion": "v1", "kind": "List", "items": [
        deployment(container_extra={"securityContext": {"privileged": True}})]}), "privileged containers"),
    ("YAML alias", "a: &x [1, 2]\nb: *x\n", "YAML aliases (*name) are not allowed"),
    ("custom tag", "kind: !!python/object:os.system {}\n", "not plain YAML data"),
    ("local tag", "kind: !Ref Something\n", "not plain YAML data"),
    ("not a mapping", "- just\n- a list\n", "expected an object (a mapping), got list"),
    ("broken YAML", "kind: [unclosed\n", "not plain YAML data (line"),
    ("empty bundle", "---\n---\n", "the bundle holds no objects"),
]


@pytest.mark.parametrize("text,expected", [(t, e) for _, t, e in BAD_BUNDLES], ids=[n for n, _, _ in BAD_BUNDLES])
def test_a_bad_bundle_is_refused_with_the_document_and_field(text, expected):
    assert any(expected in p for p in problems_of(text)), problems_of(text)


def test_a_bundle_over_the_size_limit_is_refused_before_parsing():
    with pytest.raises(m.ManifestError, match="the limit is 1024"):
        m.render_bundle("a: b\n" * 500, CTX, 1024)


def test_every_problem_is_reported_not_just_the_first():
    text = dump(deployment(pod_spec_extra={"hostNetwork": True}, container_extra={
        "securityContext": {"privileged": True}}),
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}})
    found = problems_of(text)
    assert len(found) == 3
    assert found[2].startswith("document 2, kind:")





# --- bounds: nothing in a bundle can crash the parser or blow up the report --------------------------------


def test_100000_nested_brackets_are_a_problem_not_a_crash():
    with pytest.raises(m.ManifestError, match="nested more than 32 levels deep"):
        m.render_bundle("a: " + "[" * 100_000, CTX, LIMIT)


def test_deep_nesting_built_in_python_is_refused_without_recursion():
    deep: list = []
    for _ in range(10_000):
        deep = [deep]
    found = m.validate([{**CONFIG, "data": {"x": deep}}], CTX)
    assert [(p.path[:9], p.message) for p in found] == [("data.x[0]", "nested more than 32 levels deep")]


def test_at_most_fifty_problems_are_listed_then_counted():
    text = dump(*[{**CONFIG, "metadata": {"name": f"c{n}", "finalizers": ["x/y"]}} for n in range(400)])
    with pytest.raises(m.ManifestError) as info:
        m.render_bundle(text, CTX, LIMIT)
    assert info.value.total == 400 and len(info.value.problems) == 50
    assert str(info.value).endswith("; and 350 more problems")


def test_a_megabyte_bundle_gives_a_bounded_message():
    junk = dump(*[{**CONFIG, "metadata": {"name": "x" * 2000 + str(n), "junk": "y" * 2000}} for n in range(200)])
    with pytest.raises(m.ManifestError) as info:
        m.render_bundle(junk, CTX, 10 * LIMIT)
    assert len(str(info.value)) < 50 * 900


def test_too_many_objects_are_refused():
    with pytest.raises(m.ManifestError, match="the limit is 500"):
        m.render_bundle(dump(*[{**CONFIG, "metadata": {"name": f"c{n}"}} for n in range(501)]), CTX, 10 * LIMIT)


# --- guardrails: storage, PVC count and ephemeral storage; DNS only to the cluster DNS -------------------------


def test_the_quota_covers_storage_claims_and_ephemeral_storage():
    hard = m.guardrail_objects(CTX, m.Guardrails("2", "4Gi", 20, "ingress-nginx", quota_storage="5Gi",
                                                 quota_pvcs=3, quota_ephemeral_storage="2Gi"))[0]["spec"]["hard"]
    assert (hard["requests.storage"], hard["persistentvolumeclaims"]) == ("5Gi", "3")
    assert hard["requests.ephemeral-storage"] == hard["limits.ephemeral-storage"] == "2Gi"


def test_the_limit_range_gives_every_container_ephemeral_storage_defaults():
    limits = m.guardrail_objects(CTX, m.Guardrails("2", "4Gi", 20, "ingress-nginx", quota_ephemeral_storage="8Gi")
                                 )[1]["spec"]["limits"][0]
    assert "ephemeral-storage" in limits["default"] and "ephemeral-storage" in limits["defaultRequest"]


def test_without_an_ephemeral_storage_quota_nothing_asks_for_ephemeral_storage():
    objects = m.guardrail_objects(CTX, m.Guardrails("2", "4Gi", 20, "ingress-nginx"))
    assert not any("ephemeral" in key for key in objects[0]["spec"]["hard"])
    assert "ephemeral-storage" not in objects[1]["spec"]["limits"][0]["defaultRequest"]


def test_dns_egress_goes_only_to_the_cluster_dns_pods():
    policy = m.guardrail_objects(CTX, m.Guardrails("2", "4Gi", 20, "ingress-nginx"))[2]["spec"]
    dns = [rule for rule in policy["egress"] if "ports" in rule]
    assert len(dns) == 1 and dns[0]["to"] == [{
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
        "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}]
    assert all(rule.get("to") for rule in policy["egress"]), "no egress rule may leave the destination open"


# --- what the service adds to every pod -----------------------------------------------------------------

def test_every_pod_template_carries_the_commit_for_the_downward_api():
    ctx = dataclasses.replace(CTX, head_sha="c" * 40)
    [deployment_] = [o for o in m.render_bundle(SAMPLE, ctx, LIMIT) if o["kind"] == "Deployment"]
    template = deployment_["spec"]["template"]
    assert template["metadata"]["annotations"][m.HEAD_SHA_ANNOTATION] == "c" * 40
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in template["spec"]["containers"][0]["env"]}
    assert env == {"PREVIEW_PR": f"metadata.labels['{m.PR_LABEL}']",
                   "PREVIEW_COMMIT": f"metadata.annotations['{m.HEAD_SHA_ANNOTATION}']"}


def test_the_repositorys_placement_reaches_every_pod_and_keeps_the_prs_os_selector():
    placement = m.Placement(node_selector=(("previews.local/node", "real"),),
                            tolerations=(("previews.local/real-node", "NoSchedule"),))
    ctx = dataclasses.replace(CTX, placement=placement)
    text = dump(deployment(pod_spec_extra={"nodeSelector": {"kubernetes.io/os": "linux"}}), {
        "apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "nightly"},
        "spec": {"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": {"spec": {
            "restartPolicy": "Never", "containers": [{"name": "c", "image": "localhost/previews-sample:old"}]}}}}}})
    deployment_, cron = m.render_bundle(text, ctx, LIMIT)[:2]
    spec = deployment_["spec"]["template"]["spec"]
    assert spec["nodeSelector"] == {"kubernetes.io/os": "linux", "previews.local/node": "real"}
    assert spec["tolerations"] == [{"key": "previews.local/real-node", "operator": "Exists", "effect": "NoSchedule"}]
    cron_spec = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert cron_spec["nodeSelector"] == {"previews.local/node": "real"} and cron_spec["tolerations"]


def test_without_a_placement_pods_are_left_to_the_scheduler():
    spec = m.render_bundle(dump(deployment()), CTX, LIMIT)[0]["spec"]["template"]["spec"]
    assert "tolerations" not in spec and "nodeSelector" not in spec


def test_a_prs_own_tolerations_are_still_refused_whatever_the_repositorys_placement():
    ctx = dataclasses.replace(CTX, placement=m.Placement(tolerations=(("previews.local/real-node", "NoSchedule"),)))
    text = dump(deployment(pod_spec_extra={"tolerations": [{"operator": "Exists"}]}))
    with pytest.raises(m.ManifestError) as caught:
        m.render_bundle(text, ctx, LIMIT)
    assert "tolerations are not allowed" in str(caught.value)


# --- the repository's TLS Secret ----------------------------------------------------------------------------

TLS_CTX = dataclasses.replace(CTX, tls_secret_name="previews-tls", tls_secret_source="gateway-system")


def test_a_bundles_own_ingress_gets_the_repositorys_certificate_for_the_preview_host():
    [ingress] = [o for o in m.render_bundle(SAMPLE, TLS_CTX, LIMIT) if o["kind"] == "Ingress"]
    assert ingress["spec"]["tls"] == [{"hosts": [TLS_CTX.host], "secretName": "previews-tls"}]


def test_a_bundle_may_not_bring_a_secret_named_like_the_one_the_service_copies():
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "previews-tls"}, "type": "Opaque",
              "stringData": {"a": "b"}}
    with pytest.raises(m.ManifestError) as caught:
        m.render_bundle(dump(secret), TLS_CTX, LIMIT)
    assert "document 1, metadata.name: 'previews-tls' is the repository's TLS Secret, which the service copies" \
           in str(caught.value)
    assert m.render_bundle(dump(secret), dataclasses.replace(TLS_CTX, tls_secret_source=""), LIMIT)


def test_the_copy_of_the_tls_secret_carries_our_labels_and_only_the_certificate_and_key():
    ctx = dataclasses.replace(TLS_CTX, labels={m.MANAGED_BY_LABEL: m.MANAGED_BY_VALUE})
    copy = m.tls_secret_copy(ctx, {"tls.crt": "Y2VydA==", "tls.key": "a2V5", "ca.crt": "Y2E="})
    assert copy == {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                    "metadata": {"name": "previews-tls", "namespace": ctx.namespace,
                                 "labels": {m.MANAGED_BY_LABEL: m.MANAGED_BY_VALUE}},
                    "data": {"tls.crt": "Y2VydA==", "tls.key": "a2V5"}}
