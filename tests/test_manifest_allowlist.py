"""The manifest policy's allow-list, class by class: every hostile case refused at its document and field, what
the policy allows, and Pod Security restricted up front (pure functions, tested directly)."""

import pytest
from kubernetes import client

from previews import manifests as m
from tests.manifest_bundles import (
    C0,
    CONFIG,
    CTX,
    HOST,
    LIMIT,
    POD,
    SAMPLE,
    container,
    deployment,
    dump,
    ingress,
    pdb,
    pod,
    pvc,
    refused_at,
    service,
    volume,
)

# --- the allow-list, class by class: each hostile case refused at its exact document and field -------------
#
# (name, bundle, document number (1-based), field path, what the message says). Every bundle is refused
# by render_bundle, before anything could reach the cluster.


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

