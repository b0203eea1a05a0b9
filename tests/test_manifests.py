"""Rendering and the manifest policy: pure functions, tested directly."""

import dataclasses
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from previews import manifests as m

SAMPLE = (Path(__file__).resolve().parent.parent / "previews" / "samples" / "shop.yaml").read_text()
HOST = "pr-42.preview.example.com"
CTX = m.RenderContext(
    namespace="pr-42", host=HOST, labels={m.MANAGED_BY_LABEL: m.MANAGED_BY_VALUE, m.PR_LABEL: "42"},
    images={"localhost/previews-sample": "localhost/previews-sample:pr-42-abc1234"},
)
LIMIT = 1_048_576


def deployment(pod_spec_extra=None, container_extra=None, name="web", image="localhost/previews-sample:staging", **top):
    container = {"name": "c", "image": image, **(container_extra or {})}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, **top.pop("metadata", {})},
        "spec": {"selector": {"matchLabels": {"app": name}}, "template": {
            "metadata": {"labels": {"app": name}},
            "spec": {"containers": [container], **(pod_spec_extra or {})}}},
        **top,
    }


def dump(*objects) -> str:
    return yaml.safe_dump_all(objects)


def problems_of(text: str) -> list[str]:
    with pytest.raises(m.ManifestError) as info:
        m.render_bundle(text, CTX, LIMIT)
    return [str(p) for p in info.value.problems]


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




# --- the allow-list, class by class: each hostile case refused at its exact document and field -------------
#
# (name, bundle, document number (1-based), field path, what the message says). Every bundle is refused
# by render_bundle, before anything could reach the cluster.

POD = "spec.template.spec"
C0 = f"{POD}.containers[0]"


def pod(**pod_spec_extra) -> dict:
    return deployment(pod_spec_extra=pod_spec_extra)


def container(**extra) -> dict:
    return deployment(container_extra=extra)


def volume(**source) -> dict:
    return pod(volumes=[{"name": "v", **source}])


def ingress(annotations=None, **spec) -> dict:
    backend = {"service": {"name": "web", "port": {"number": 80}}}
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": "i", **({"annotations": annotations} if annotations else {})},
            "spec": {"rules": [{"host": "PREVIEW_HOST", "http": {"paths": [
                {"path": "/", "pathType": "Prefix", "backend": backend}]}}], **spec}}


def pvc(**spec) -> dict:
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}, **spec}}


def pdb(**spec) -> dict:
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "b"}, "spec": spec}


def service(**spec) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}], **spec}}


CONFIG = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ok"}}

VOLUME_CASES = [
    ("nfs", volume(nfs={"server": "10.0.0.5", "path": "/exports"}), 1, f"{POD}.volumes[0].nfs",
     "nfs volumes are not allowed"),
    ("iscsi", volume(iscsi={"targetPortal": "10.0.0.5:3260", "iqn": "iqn.x", "lun": 0}), 1,
     f"{POD}.volumes[0].iscsi", "iscsi volumes are not allowed"),
    ("inline csi", volume(csi={"driver": "secrets-store.csi.k8s.io"}), 1, f"{POD}.volumes[0].csi",
     "csi volumes are not allowed"),
    ("aws disk", volume(awsElasticBlockStore={"volumeID": "vol-1"}), 1, f"{POD}.volumes[0].awsElasticBlockStore",
     "not allowed"),
    ("gce disk", volume(gcePersistentDisk={"pdName": "prod-db"}), 1, f"{POD}.volumes[0].gcePersistentDisk",
     "not allowed"),
    ("azure disk", volume(azureDisk={"diskName": "d", "diskURI": "u"}), 1, f"{POD}.volumes[0].azureDisk",
     "not allowed"),
    ("cephfs", volume(cephfs={"monitors": ["10.0.0.1"]}), 1, f"{POD}.volumes[0].cephfs", "not allowed"),
    ("rbd", volume(rbd={"monitors": ["10.0.0.1"], "image": "x"}), 1, f"{POD}.volumes[0].rbd", "not allowed"),
    ("glusterfs", volume(glusterfs={"endpoints": "e", "path": "p"}), 1, f"{POD}.volumes[0].glusterfs",
     "not allowed"),
    ("flexVolume", volume(flexVolume={"driver": "x/y"}), 1, f"{POD}.volumes[0].flexVolume", "not allowed"),
    ("gitRepo (runs git on the node)", volume(gitRepo={"repository": "https://x"}), 1, f"{POD}.volumes[0].gitRepo",
     "not allowed"),
    ("image volume", volume(image={"reference": "busybox"}), 1, f"{POD}.volumes[0].image", "not allowed"),
    ("hostPath next to a configMap", volume(configMap={"name": "c"}, hostPath={"path": "/"}), 1,
     f"{POD}.volumes[0].hostPath", "hostPath volumes are not allowed"),
    ("projected cluster trust bundle", volume(projected={"sources": [{"clusterTrustBundle": {"name": "x"}}]}), 1,
     f"{POD}.volumes[0].projected.sources[0].clusterTrustBundle", "not an allowed projected volume source"),
    ("volume without a source", volume(), 1, f"{POD}.volumes[0]", "exactly one source"),
]

POD_SPEC_CASES = [
    ("nodeName", pod(nodeName="control-plane-1"), 1, f"{POD}.nodeName", "pins the pod to a node"),
    ("blanket toleration", pod(tolerations=[{"operator": "Exists"}]), 1, f"{POD}.tolerations",
     "tolerations are not allowed"),
    ("system-node-critical", pod(priorityClassName="system-node-critical"), 1, f"{POD}.priorityClassName",
     "preempt"),
    ("priority", pod(priority=2000001000), 1, f"{POD}.priority", "preempt"),
    ("runtimeClassName", pod(runtimeClassName="runc-unconfined"), 1, f"{POD}.runtimeClassName", "not allowed"),
    ("schedulerName", pod(schedulerName="mine"), 1, f"{POD}.schedulerName", "default scheduler"),
    ("nodeSelector on a host", pod(nodeSelector={"kubernetes.io/hostname": "node-1"}), 1,
     f"{POD}.nodeSelector[kubernetes.io/hostname]", "not pinned to nodes"),
    ("nodeAffinity", pod(affinity={"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {}}}), 1,
     f"{POD}.affinity.nodeAffinity", "pins previews"),
    ("sysctls", pod(securityContext={"sysctls": [{"name": "kernel.shm_rmid_forced", "value": "0"}]}), 1,
     f"{POD}.securityContext.sysctls", "sysctls"),
    ("hostUsers false", pod(hostUsers=False), 1, f"{POD}.hostUsers", "hostUsers"),
    ("dnsPolicy Default", pod(dnsPolicy="Default"), 1, f"{POD}.dnsPolicy", "not allowed"),
    ("ephemeralContainers", pod(ephemeralContainers=[{"name": "e", "image": "busybox"}]), 1,
     f"{POD}.ephemeralContainers", "debugging"),
    ("resourceClaims", pod(resourceClaims=[{"name": "gpu"}]), 1, f"{POD}.resourceClaims", "devices"),
    ("schedulingGates", pod(schedulingGates=[{"name": "x"}]), 1, f"{POD}.schedulingGates", "quota"),
    ("an unknown pod field", pod(futureField=True), 1, f"{POD}.futureField", "not an allowed pod spec field"),
    ("hostNetwork", pod(hostNetwork=True), 1, f"{POD}.hostNetwork", "hostNetwork is not allowed"),
    ("probe to another host", container(livenessProbe={"httpGet": {"host": "169.254.169.254", "port": 80}}), 1,
     f"{C0}.livenessProbe.httpGet.host", "from the node to another host"),
    ("hook to another host", container(lifecycle={"preStop": {"tcpSocket": {"host": "10.0.0.1", "port": 22}}}), 1,
     f"{C0}.lifecycle.preStop.tcpSocket.host", "from the node"),
    ("hostIP", container(ports=[{"containerPort": 80, "hostIP": "0.0.0.0"}]), 1, f"{C0}.ports[0].hostIP",
     "node's addresses"),
    ("mount propagation", container(volumeMounts=[{"name": "v", "mountPath": "/x",
                                                   "mountPropagation": "Bidirectional"}]), 1,
     f"{C0}.volumeMounts[0].mountPropagation", "propagation"),
    ("an unknown container field", container(futureField=1), 1, f"{C0}.futureField", "not an allowed container"),
]

SECURITY_CASES = [
    ("SYS_ADMIN", container(securityContext={"capabilities": {"add": ["SYS_ADMIN"]}}), 1,
     f"{C0}.securityContext.capabilities.add[0]", "adding 'SYS_ADMIN' is not allowed"),
    ("NET_RAW is not in baseline", container(securityContext={"capabilities": {"add": ["CHOWN", "NET_RAW"]}}), 1,
     f"{C0}.securityContext.capabilities.add[1]", "adding 'NET_RAW'"),
    ("ALL", container(securityContext={"capabilities": {"add": ["ALL"]}}), 1,
     f"{C0}.securityContext.capabilities.add[0]", "not allowed"),
    ("procMount Unmasked", container(securityContext={"procMount": "Unmasked"}), 1,
     f"{C0}.securityContext.procMount", "Default procMount"),
    ("container seccomp Unconfined", container(securityContext={"seccompProfile": {"type": "Unconfined"}}), 1,
     f"{C0}.securityContext.seccompProfile.type", "'Unconfined' is not allowed"),
    ("pod seccomp Unconfined", pod(securityContext={"seccompProfile": {"type": "Unconfined"}}), 1,
     f"{POD}.securityContext.seccompProfile.type", "'Unconfined' is not allowed"),
    ("AppArmor Unconfined", container(securityContext={"appArmorProfile": {"type": "Unconfined"}}), 1,
     f"{C0}.securityContext.appArmorProfile.type", "'Unconfined' is not allowed"),
    ("AppArmor annotation", {**deployment(), "spec": {**deployment()["spec"], "template": {
            "metadata": {"annotations": {"container.apparmor.security.beta.kubernetes.io/c": "unconfined"}},
            "spec": deployment()["spec"]["template"]["spec"]}}}, 1,
     "spec.template.metadata.annotations[container.apparmor.security.beta.kubernetes.io/c]", "reserved"),
    ("SELinux spc_t", container(securityContext={"seLinuxOptions": {"type": "spc_t"}}), 1,
     f"{C0}.securityContext.seLinuxOptions.type", "'spc_t' is not allowed"),
    ("SELinux user", pod(securityContext={"seLinuxOptions": {"user": "system_u"}}), 1,
     f"{POD}.securityContext.seLinuxOptions.user", "not an allowed seLinuxOptions field"),
    ("Windows host process", container(securityContext={"windowsOptions": {"hostProcess": True}}), 1,
     f"{C0}.securityContext.windowsOptions", "host-process"),
    ("privileged", container(securityContext={"privileged": True}), 1, f"{C0}.securityContext.privileged",
     "privileged containers are not allowed"),
]

PVC_CASES = [
    ("volumeName binds an existing PV", pvc(volumeName="prod-db-pv"), 1, "spec.volumeName",
     "existing PersistentVolume"),
    ("selector binds by labels", pvc(selector={"matchLabels": {"team": "db"}}), 1, "spec.selector",
     "existing PersistentVolume"),
    ("empty class", pvc(storageClassName=""), 1, "spec.storageClassName", "pre-provisioned"),
    ("a class not in the repository's list", pvc(storageClassName="fast-ssd"), 1, "spec.storageClassName",
     "storage class 'fast-ssd' is not allowed"),
    ("snapshot in another namespace", pvc(dataSourceRef={"apiGroup": "snapshot.storage.k8s.io",
                                                         "kind": "VolumeSnapshot", "name": "s",
                                                         "namespace": "prod"}), 1,
     "spec.dataSourceRef.namespace", "own namespace"),
    ("a foreign data source kind", pvc(dataSource={"apiGroup": "example.com", "kind": "Bucket", "name": "b"}), 1,
     "spec.dataSource.kind", "not allowed as a data source"),
    ("volume attributes class", pvc(volumeAttributesClassName="gold"), 1, "spec.volumeAttributesClassName",
     "cluster-wide"),
    ("a StatefulSet claim binding a PV", {
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"},
        "spec": {"serviceName": "db", "selector": {"matchLabels": {"a": "b"}},
                 "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [
                     {"name": "c", "image": "postgres:16"}]}},
                 "volumeClaimTemplates": [{"metadata": {"name": "d"}, "spec": {"volumeName": "pv-1"}}]}}, 1,
     "spec.volumeClaimTemplates[0].spec.volumeName", "existing PersistentVolume"),
    ("an ephemeral volume binding a PV", volume(ephemeral={"volumeClaimTemplate": {"spec": {
        "volumeName": "pv-1", "accessModes": ["ReadWriteOnce"]}}}), 1,
     f"{POD}.volumes[0].ephemeral.volumeClaimTemplate.spec.volumeName", "existing PersistentVolume"),
]

INGRESS_CASES = [
    ("server-alias", ingress({"nginx.ingress.kubernetes.io/server-alias": "shop.example.com"}), 1,
     "metadata.annotations[nginx.ingress.kubernetes.io/server-alias]", "Ingress annotation is not allowed"),
    ("mirror-target", ingress({"nginx.ingress.kubernetes.io/mirror-target": "http://169.254.169.254/"}), 1,
     "metadata.annotations[nginx.ingress.kubernetes.io/mirror-target]", "not allowed"),
    ("auth-tls-secret in kube-system", ingress({"nginx.ingress.kubernetes.io/auth-tls-secret": "kube-system/ca"}),
     1, "metadata.annotations[nginx.ingress.kubernetes.io/auth-tls-secret]", "not allowed"),
    ("permanent-redirect", ingress({"nginx.ingress.kubernetes.io/permanent-redirect": "https://evil"}), 1,
     "metadata.annotations[nginx.ingress.kubernetes.io/permanent-redirect]", "not allowed"),
    ("server-snippet", ingress({"nginx.ingress.kubernetes.io/server-snippet": "location / {}"}), 1,
     "metadata.annotations[nginx.ingress.kubernetes.io/server-snippet]", "not allowed"),
    ("the class annotation", ingress({"kubernetes.io/ingress.class": "public"}), 1,
     "metadata.annotations[kubernetes.io/ingress.class]", "not allowed"),
    ("another controller's annotation", ingress({"haproxy.org/backend-config-snippet": "x"}), 1,
     "metadata.annotations[haproxy.org/backend-config-snippet]", "not allowed"),
    ("an injection in an allowed annotation",
     ingress({"nginx.ingress.kubernetes.io/proxy-body-size": '8m;\n}\nlocation /x { return 200 "owned"; }'}), 1,
     "metadata.annotations[nginx.ingress.kubernetes.io/proxy-body-size]", "may hold only"),
    ("its own ingressClassName", ingress(ingressClassName="public-nginx"), 1, "spec.ingressClassName",
     "the service sets the Ingress class"),
    ("a resource backend", {**ingress(), "spec": {"rules": [{"host": HOST, "http": {"paths": [
        {"path": "/", "pathType": "Prefix", "backend": {"resource": {"kind": "Bucket", "name": "b"}}}]}}]}}, 1,
     "spec.rules[0].http.paths[0].backend.resource", "only to Services"),
    ("a path with nginx syntax", {**ingress(), "spec": {"rules": [{"host": HOST, "http": {"paths": [
        {"path": "/x { deny all; }", "pathType": "ImplementationSpecific",
         "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}}, 1,
     "spec.rules[0].http.paths[0].path", "not a plain path"),
]

OBJECT_CASES = [
    ("PDB blocking drains", pdb(maxUnavailable=0, selector={}), 1, "spec.maxUnavailable", "block node drains"),
    ("PDB with an empty selector", pdb(maxUnavailable=1, selector={}), 1, "spec.selector", "must select its pods"),
    ("PDB at 0%", pdb(maxUnavailable="0%", selector={"matchLabels": {"app": "web"}}), 1, "spec.maxUnavailable",
     "block node drains"),
    ("PDB with minAvailable", pdb(minAvailable=2, selector={"matchLabels": {"app": "web"}}), 1,
     "spec.minAvailable", "use maxUnavailable"),
    ("a finalizer nobody removes", {**CONFIG, "metadata": {"name": "c", "finalizers": ["example.com/hold"]}}, 1,
     "metadata.finalizers", "teardown would hang"),
    ("a finalizer on the pod template", {**deployment(), "spec": {**deployment()["spec"], "template": {
        "metadata": {"finalizers": ["x/y"]}, "spec": deployment()["spec"]["template"]["spec"]}}}, 1,
     "spec.template.metadata.finalizers", "teardown would hang"),
    ("ownerReferences", {**CONFIG, "metadata": {"name": "c", "ownerReferences": [{"kind": "Node"}]}}, 1,
     "metadata.ownerReferences", "not allowed"),
    ("ServiceAccount token Secret", {"apiVersion": "v1", "kind": "Secret", "metadata": {
        "name": "t", "annotations": {"kubernetes.io/service-account.name": "default"}},
        "type": "kubernetes.io/service-account-token"}, 1, "type", "long-lived API credentials"),
    ("the token annotation on an Opaque Secret", {"apiVersion": "v1", "kind": "Secret", "metadata": {
        "name": "t", "annotations": {"kubernetes.io/service-account.name": "default"}}}, 1,
     "metadata.annotations[kubernetes.io/service-account.name]", "reserved"),
    ("a bootstrap token Secret", {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "t"},
                                  "type": "bootstrap.kubernetes.io/token"}, 1, "type", "not allowed"),
    ("a fixed cluster IP", service(clusterIP="10.96.0.10"), 1, "spec.clusterIP", "no cluster IP"),
    ("a nodePort", service(ports=[{"port": 80, "nodePort": 30080}]), 1, "spec.ports[0].nodePort",
     "node ports are not allowed"),
    ("loadBalancerSourceRanges", service(loadBalancerSourceRanges=["0.0.0.0/0"]), 1,
     "spec.loadBalancerSourceRanges", "not an allowed Service spec field"),
    ("an autoscaler aimed elsewhere", {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                                       "metadata": {"name": "h"}, "spec": {"scaleTargetRef": {
                                           "apiVersion": "v1", "kind": "ReplicationController", "name": "x"},
                                           "maxReplicas": 3}}, 1, "spec.scaleTargetRef", "only a Deployment"),
    ("an unknown top-level field", {**CONFIG, "extra": {"x": 1}}, 1, "extra", "not an allowed top-level field"),
    ("a second document is named", dump(CONFIG, pod(nodeName="n")), 2, f"{POD}.nodeName", "pins the pod"),
]

DATA_CASES = [
    ("a !!binary key", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata:\n  ? !!binary aGk=\n  : x\n",
     1, "data", "only string keys are allowed"),
    ("a !!binary value", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {k: !!binary aGk=}\n", 1,
     "data.k", "bytes value is not plain data"),
    ("an integer key", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {1: x}\n", 1, "data",
     "only string keys"),
    ("a !!set", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: !!set {a, b}\n", 1, "data",
     "set value is not plain data"),
    ("an explicit timestamp", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {d: !!timestamp "
     "2024-01-01}\n", 1, "data.d", "not plain data"),
    ("not a number", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {n: .nan}\n", 1, "data.n",
     "not a finite number"),
    ("a huge integer", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {n: 99999999999999999999}\n",
     1, "data.n", "out of range"),
    ("deep nesting in the second document", dump(CONFIG) + "---\n" + "a: " + "[" * 100 + "]" * 100 + "\n", 2, "",
     "nested more than 32 levels deep"),
]


def refused_at(text: str, document: int, path: str, fragment: str, ctx: m.RenderContext = CTX) -> None:
    with pytest.raises(m.ManifestError) as info:
        m.render_bundle(text, ctx, LIMIT)
    problems = info.value.problems
    assert any(p.document == document - 1 and p.path == path and fragment in p.message for p in problems), \
        [str(p) for p in problems]


ALL_CLASSES = {"volume": VOLUME_CASES, "pod spec": POD_SPEC_CASES, "security": SECURITY_CASES, "pvc": PVC_CASES,
               "ingress": INGRESS_CASES, "object": OBJECT_CASES, "data": DATA_CASES}
HOSTILE = [(f"{cls}: {name}", bundle, doc, path, fragment)
           for cls, cases in ALL_CLASSES.items() for name, bundle, doc, path, fragment in cases]


@pytest.mark.parametrize("bundle,document,path,fragment", [c[1:] for c in HOSTILE], ids=[c[0] for c in HOSTILE])
def test_a_hostile_bundle_is_refused_at_its_document_and_field(bundle, document, path, fragment):
    refused_at(bundle if isinstance(bundle, str) else dump(bundle), document, path, fragment)


def _kubernetes_fields(model) -> set[str]:
    """The JSON field names the Kubernetes API defines for one object type (from the client's own model)."""
    return set(model.attribute_map.values())


@pytest.mark.parametrize("field", sorted(_kubernetes_fields(client.V1PodSpec) - m.POD_SPEC_FIELDS))
def test_every_pod_spec_field_kubernetes_has_beyond_the_allow_list_is_refused(field):
    """Allow-list, not deny-list: a field the policy does not name is refused, including ones added later."""
    refused_at(dump(pod(**{field: "anything"})), 1, f"{POD}.{field}", "")


@pytest.mark.parametrize("field", sorted(_kubernetes_fields(client.V1Container) - m.CONTAINER_FIELDS))
def test_every_container_field_kubernetes_has_beyond_the_allow_list_is_refused(field):
    refused_at(dump(container(**{field: "anything"})), 1, f"{C0}.{field}", "")


@pytest.mark.parametrize("source", sorted(_kubernetes_fields(client.V1Volume) - {"name", *m.VOLUME_TYPES}))
def test_every_volume_type_kubernetes_has_beyond_the_allow_list_is_refused(source):
    refused_at(dump(volume(**{source: {}})), 1, f"{POD}.volumes[0].{source}", "volumes are not allowed")


# What the policy allows: each is a real need of an ordinary app, and must stay accepted.
ALLOWED = [
    ("the sample app", SAMPLE),
    ("baseline capabilities with ALL dropped", dump(container(securityContext={
        "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE", "CHOWN"]}, "allowPrivilegeEscalation": False,
        "seccompProfile": {"type": "RuntimeDefault"}, "readOnlyRootFilesystem": True}))),
    ("the safe volume types", dump(pod(volumes=[
        {"name": "a", "configMap": {"name": "c"}}, {"name": "b", "secret": {"secretName": "s"}},
        {"name": "c", "emptyDir": {"sizeLimit": "1Gi"}}, {"name": "d", "downwardAPI": {"items": []}},
        {"name": "e", "persistentVolumeClaim": {"claimName": "data"}},
        {"name": "f", "projected": {"sources": [{"serviceAccountToken": {"path": "t"}}, {"configMap": {"name": "c"}}]}},
        {"name": "g", "ephemeral": {"volumeClaimTemplate": {"spec": {
            "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}}}]))),
    ("a PVC of the default class cloned from a PVC here", dump(pvc(dataSource={"kind": "PersistentVolumeClaim",
                                                                              "name": "seed"}))),
    ("PDBs that allow a disruption, over different pods", dump(
        pdb(maxUnavailable=1, selector={"matchLabels": {"app": "web"}}),
        pdb(maxUnavailable="50%", selector={"matchLabels": {"app": "worker"}}) | {"metadata": {"name": "b2"}})),
    ("allowed Ingress annotations", dump(ingress({"nginx.ingress.kubernetes.io/proxy-body-size": "8m",
                                                  "nginx.ingress.kubernetes.io/cors-allow-origin":
                                                      "https://a.example.com, https://b.example.com"}))),
    ("os selector, empty tolerations and anti-affinity", dump(pod(
        nodeSelector={"kubernetes.io/os": "linux"}, tolerations=[], affinity={"podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": []}}, hostAliases=[{"ip": "127.0.0.1",
                                                                                  "hostnames": ["db"]}]))),
    ("a date-looking value stays a string", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n"
                                            "data: {released: 2024-01-01}\n"),
    ("kubectl's default-container annotation", dump({**deployment(), "spec": {**deployment()["spec"], "template": {
        "metadata": {"annotations": {"kubectl.kubernetes.io/default-container": "c"}},
        "spec": deployment()["spec"]["template"]["spec"]}}})),
    ("status and a null creationTimestamp from kubectl", dump({**CONFIG, "metadata": {
        "name": "c", "creationTimestamp": None}, "status": {}})),
]


@pytest.mark.parametrize("text", [t for _, t in ALLOWED], ids=[n for n, _ in ALLOWED])
def test_ordinary_bundles_are_accepted(text):
    assert m.render_bundle(text, CTX, LIMIT)


def test_a_date_looking_value_is_rendered_as_the_string_written():
    text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {released: 2024-01-01}\n"
    assert m.render_bundle(text, CTX, LIMIT)[0]["data"] == {"released": "2024-01-01"}


def test_a_storage_class_from_the_repositorys_list_is_accepted():
    ctx = m.RenderContext(**{**CTX.__dict__, "policy": m.Policy(storage_classes=("fast-ssd",))})
    assert m.render_bundle(dump(pvc(storageClassName="fast-ssd")), ctx, LIMIT)
    refused_at(dump(pvc(storageClassName="slow")), 1, "spec.storageClassName", "allowed: fast-ssd", ctx)


def test_the_ingress_annotation_list_is_configurable():
    ctx = m.RenderContext(**{**CTX.__dict__, "policy": m.Policy(
        ingress_annotations=frozenset({"nginx.ingress.kubernetes.io/rewrite-target"}))})
    text = dump(ingress({"nginx.ingress.kubernetes.io/rewrite-target": "/"}))
    assert m.render_bundle(text, ctx, LIMIT)
    refused_at(text, 1, "metadata.annotations[nginx.ingress.kubernetes.io/rewrite-target]", "not allowed")


def test_the_ingress_class_is_always_the_services():
    ctx = m.RenderContext(**{**CTX.__dict__, "ingress_class": "previews"})
    rendered = m.render_bundle(dump(ingress(ingressClassName="previews")), ctx, LIMIT)
    assert rendered[0]["spec"]["ingressClassName"] == "previews"
    assert m.render_bundle(dump(ingress()), ctx, LIMIT)[0]["spec"]["ingressClassName"] == "previews"
    refused_at(dump(ingress(ingressClassName="public")), 1, "spec.ingressClassName", "'previews'", ctx)


def test_rendering_drops_status_and_creation_timestamp():
    text = dump({**CONFIG, "metadata": {"name": "c", "creationTimestamp": None}, "status": {}})
    rendered = m.render_bundle(text, CTX, LIMIT)[0]
    assert "status" not in rendered and "creationTimestamp" not in rendered["metadata"]


# --- Pod Security restricted, checked before anything is applied ------------------------------------------

RESTRICTED = m.RenderContext(**{**CTX.__dict__, "policy": m.Policy(pod_security="restricted")})
RESTRICTED_OK = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "runAsNonRoot": True,
                 "seccompProfile": {"type": "RuntimeDefault"}}


@pytest.mark.parametrize("security,path,fragment", [
    ({**RESTRICTED_OK, "allowPrivilegeEscalation": True}, "allowPrivilegeEscalation", "set to false"),
    ({k: v for k, v in RESTRICTED_OK.items() if k != "capabilities"}, "capabilities.drop", "ALL dropped"),
    ({**RESTRICTED_OK, "runAsNonRoot": False}, "runAsNonRoot", "runAsNonRoot: true"),
    ({**RESTRICTED_OK, "runAsUser": 0}, "runAsUser", "user 0"),
    ({k: v for k, v in RESTRICTED_OK.items() if k != "seccompProfile"}, "seccompProfile", "RuntimeDefault"),
    ({**RESTRICTED_OK, "capabilities": {"drop": ["ALL"], "add": ["CHOWN"]}}, "capabilities.add[0]",
     "under Pod Security restricted"),
])
def test_restricted_repositories_get_restricted_errors_up_front(security, path, fragment):
    refused_at(dump(container(securityContext=security)), 1, f"{C0}.securityContext.{path}", fragment, RESTRICTED)


def test_a_restricted_container_passes_and_pod_level_settings_count():
    assert m.render_bundle(dump(container(securityContext=RESTRICTED_OK)), RESTRICTED, LIMIT)
    both = deployment(pod_spec_extra={"securityContext": {"runAsNonRoot": True, "seccompProfile": {
        "type": "RuntimeDefault"}}}, container_extra={"securityContext": {
            "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}})
    assert m.render_bundle(dump(both), RESTRICTED, LIMIT)


@pytest.mark.parametrize("level", ["baseline", "restricted"])
def test_namespace_security_labels_enforce_the_level_and_warn_about_restricted(level):
    labels = m.namespace_security_labels(level)
    assert labels["pod-security.kubernetes.io/enforce"] == level
    assert labels["pod-security.kubernetes.io/warn"] == "restricted"


def test_an_unknown_pod_security_level_is_an_error():
    with pytest.raises(ValueError, match="privileged"):
        m.namespace_security_labels("privileged")


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
