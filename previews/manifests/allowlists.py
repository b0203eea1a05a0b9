"""The policy's tables: what a bundle may hold, kind by kind and field by field, and its size bounds."""

from __future__ import annotations

import re

from previews.manifests.labels import GATEWAY_API_VERSION

# Bounds on what a bundle may be, so that neither parsing nor the error report can blow up.
MAX_DEPTH = 32  # nesting of mappings and lists; a Deployment needs about 12
MAX_OBJECTS = 500
# Scalars, lists and mappings in the whole bundle: parsing costs per value, and a realistic 1 MiB bundle holds
# about 50 000 (bench/manifest_parse.py); 1 MiB of one-character values would hold half a million.
MAX_NODES = 100_000
# Ingress paths and HTTPRoute matches in the whole bundle: each is a route in the shared controller's
# configuration, reloaded for every preview.
MAX_ROUTE_PATHS = 50
MAX_PROBLEMS = 50  # listed in an error; the rest are counted
MAX_SHOWN = 80  # characters of a user-supplied value quoted in a message
MAX_INT = 2**63 - 1

# kind -> the apiVersions we accept for it. Everything else is refused.
ALLOWED_KINDS: dict[str, tuple[str, ...]] = {
    "Deployment": ("apps/v1",),
    "StatefulSet": ("apps/v1",),
    "Service": ("v1",),
    "ConfigMap": ("v1",),
    "Secret": ("v1",),
    "Ingress": ("networking.k8s.io/v1",),
    "Job": ("batch/v1",),
    "CronJob": ("batch/v1",),
    "PersistentVolumeClaim": ("v1",),
    "HorizontalPodAutoscaler": ("autoscaling/v2",),
    "PodDisruptionBudget": ("policy/v1",),
    "ServiceAccount": ("v1",),
    # Only with the repository's routing set to gateway (an Ingress only with ingress routing).
    "HTTPRoute": (GATEWAY_API_VERSION,),
}
# Kinds a bundle may not carry because the service itself owns them, or because
# they reach beyond the namespace; named so the error can say why.
RESERVED_KINDS = {
    "Namespace": "the service creates the namespace itself",
    "NetworkPolicy": "the service applies the namespace's network policy itself",
    "ResourceQuota": "the service applies the namespace's quota itself",
    "LimitRange": "the service applies the namespace's limit range itself",
    "Role": "RBAC objects are not allowed in previews",
    "RoleBinding": "RBAC objects are not allowed in previews",
    "ClusterRole": "cluster-scoped kinds are not allowed",
    "ClusterRoleBinding": "cluster-scoped kinds are not allowed",
    "CustomResourceDefinition": "cluster-scoped kinds are not allowed",
    "PersistentVolume": "cluster-scoped kinds are not allowed",
    "StorageClass": "cluster-scoped kinds are not allowed",
    "PriorityClass": "cluster-scoped kinds are not allowed",
    "ValidatingWebhookConfiguration": "cluster-scoped kinds are not allowed",
    "MutatingWebhookConfiguration": "cluster-scoped kinds are not allowed",
    "Pod": "bare Pods are not allowed; use a Deployment, StatefulSet or Job",
    "Gateway": "previews attach to the cluster's configured Gateway; they never bring their own",
    "GatewayClass": "cluster-scoped kinds are not allowed",
    "ReferenceGrant": "it would open this namespace to references from other namespaces; previews reference only "
                      "their own objects",
    "GRPCRoute": "previews are routed by an HTTPRoute only",
    "TLSRoute": "previews are routed by an HTTPRoute only",
    "TCPRoute": "previews are routed by an HTTPRoute only",
    "UDPRoute": "previews are routed by an HTTPRoute only",
}

TOP_LEVEL_FIELDS = frozenset({
    "apiVersion", "kind", "metadata", "spec", "data", "stringData", "binaryData", "type", "immutable", "status",
    "secrets", "imagePullSecrets", "automountServiceAccountToken",
})
METADATA_FIELDS = frozenset({"name", "namespace", "labels", "annotations", "creationTimestamp"})
METADATA_REASONS = {
    "finalizers": "no controller in a preview removes a finalizer, so the teardown would hang",
    "ownerReferences": "the service owns every object's lifecycle; owner references are not allowed",
    "generateName": "give every object a fixed name",
}
# Annotations in the Kubernetes-reserved domains change what Kubernetes or a controller does; only
# these harmless ones are allowed outside an Ingress's own allow-list.
HARMLESS_RESERVED_ANNOTATIONS = frozenset({
    "kubectl.kubernetes.io/default-container", "kubectl.kubernetes.io/default-logs-container",
    "kubectl.kubernetes.io/restartedAt",
})
# ingress-nginx annotations that name no host, URL, secret or snippet (configurable per installation).
DEFAULT_INGRESS_ANNOTATIONS = frozenset({
    f"nginx.ingress.kubernetes.io/{name}" for name in (
        "proxy-body-size", "proxy-connect-timeout", "proxy-read-timeout", "proxy-send-timeout",
        "proxy-buffering", "proxy-buffer-size", "proxy-request-buffering", "ssl-redirect", "force-ssl-redirect",
        "backend-protocol", "enable-cors", "cors-allow-origin", "cors-allow-methods", "cors-allow-headers",
        "cors-allow-credentials", "cors-max-age", "affinity", "session-cookie-name", "limit-rps",
        "limit-connections",
    )
})
# No quotes, semicolons, braces, dollars, backslashes or line breaks: nothing that could end a directive
# in the controller's generated configuration.
SAFE_ANNOTATION_VALUE_RE = re.compile(r"[A-Za-z0-9 ._,:/*+=@%-]{0,512}")
INGRESS_PATH_RE = re.compile(r"/[A-Za-z0-9._~/-]*")
INGRESS_PATH_TYPES = ("Prefix", "Exact", "ImplementationSpecific")

# HTTPRoute (gateway routing): the fields of the standard channel that keep a route inside its preview.
HTTPROUTE_SPEC_FIELDS = ("parentRefs", "hostnames", "rules")
HTTPROUTE_SPEC_REASONS = {"useDefaultGateways": "the service attaches routes to the configured Gateway"}
PARENT_REF_FIELDS = ("group", "kind", "namespace", "name", "sectionName")
PARENT_REF_REASONS = {"port": "the service attaches routes to the configured Gateway (and listener)"}
HTTPROUTE_RULE_FIELDS = ("name", "matches", "filters", "backendRefs", "timeouts")
HTTPROUTE_MATCH_FIELDS = ("path", "headers", "queryParams", "method")
HTTPROUTE_PATH_TYPES = ("PathPrefix", "Exact")  # RegularExpression is implementation-specific
HTTPROUTE_VALUE_MATCH_TYPES = ("Exact",)
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
BACKEND_REF_FIELDS = ("group", "kind", "name", "port", "weight", "filters")
BACKEND_REF_REASONS = {"namespace": "backends must be Services in the preview's own namespace"}
# filter type -> the field holding its settings. Anything else (ExtensionRef, CORS, ExternalAuth, ...) is refused.
ROUTE_FILTERS = {
    "RequestHeaderModifier": "requestHeaderModifier",
    "ResponseHeaderModifier": "responseHeaderModifier",
    "URLRewrite": "urlRewrite",
    "RequestRedirect": "requestRedirect",
    "RequestMirror": "requestMirror",
}
HEADER_MODIFIER_FIELDS = ("set", "add", "remove")
HEADER_NAME_RE = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,256}")
URL_REWRITE_FIELDS = ("hostname", "path")
PATH_MODIFIER_TYPES = {"ReplaceFullPath": "replaceFullPath", "ReplacePrefixMatch": "replacePrefixMatch"}
REDIRECT_FIELDS = ("scheme", "hostname", "path", "port", "statusCode")
REDIRECT_SCHEMES = ("http", "https")
REDIRECT_PORTS = (80, 443)
REDIRECT_STATUS_CODES = (301, 302, 303, 307, 308)
MIRROR_FIELDS = ("backendRef", "percent", "fraction")
TIMEOUT_FIELDS = ("request", "backendRequest")
DURATION_RE = re.compile(r"([0-9]{1,5}(h|m|s|ms)){1,4}")

SERVICE_SPEC_FIELDS = frozenset({
    "ports", "selector", "type", "clusterIP", "clusterIPs", "sessionAffinity", "sessionAffinityConfig",
    "publishNotReadyAddresses", "ipFamilies", "ipFamilyPolicy", "internalTrafficPolicy", "trafficDistribution",
})
SERVICE_PORT_FIELDS = frozenset({"name", "protocol", "port", "targetPort", "appProtocol"})

POD_SPEC_FIELDS = frozenset({
    "containers", "initContainers", "volumes", "restartPolicy", "terminationGracePeriodSeconds",
    "activeDeadlineSeconds", "dnsPolicy", "dnsConfig", "serviceAccountName", "serviceAccount",
    "automountServiceAccountToken", "securityContext", "imagePullSecrets", "hostname", "subdomain", "affinity",
    "topologySpreadConstraints", "enableServiceLinks", "shareProcessNamespace", "hostAliases", "readinessGates",
    "setHostnameAsFQDN", "os", "hostNetwork", "hostPID", "hostIPC", "hostUsers", "nodeSelector", "tolerations",
})
POD_SPEC_REASONS = {
    "nodeName": "it pins the pod to a node, past the scheduler",
    "priorityClassName": "it could preempt other workloads (system-node-critical and the like)",
    "priority": "it could preempt other workloads",
    "preemptionPolicy": "previews do not choose their preemption",
    "runtimeClassName": "previews run with the cluster's default runtime",
    "schedulerName": "previews are placed by the default scheduler",
    "overhead": "pod overhead comes from a RuntimeClass",
    "resourceClaims": "previews do not claim node devices",
    "resources": "set resources per container",
    "schedulingGates": "a gated pod would hold its quota forever",
    "ephemeralContainers": "ephemeral containers are for debugging a running pod",
}
# Only pinning to an operating system or architecture is harmless.
NODE_SELECTOR_KEYS = frozenset({"kubernetes.io/os", "kubernetes.io/arch"})
DNS_POLICIES = ("ClusterFirst", "None")
AFFINITY_FIELDS = frozenset({"podAffinity", "podAntiAffinity"})
AFFINITY_RULE_FIELDS = frozenset({"requiredDuringSchedulingIgnoredDuringExecution",
                                  "preferredDuringSchedulingIgnoredDuringExecution"})
# A pod (anti-)affinity term sees pods of the preview's own namespace only: never namespaces or namespaceSelector.
AFFINITY_TERM_FIELDS = frozenset({"labelSelector", "topologyKey", "matchLabelKeys", "mismatchLabelKeys"})
AFFINITY_TERM_REASONS = {
    "namespaces": "affinity terms see only the preview's own namespace; naming others would let a preview keep "
                  "other previews' or staging's pods off nodes, or probe their labels",
    "namespaceSelector": "affinity terms see only the preview's own namespace; a namespace selector (even {}) "
                         "reaches every namespace it matches",
}
TOPOLOGY_SPREAD_FIELDS = frozenset({"maxSkew", "topologyKey", "whenUnsatisfiable", "labelSelector", "minDomains",
                                    "matchLabelKeys", "nodeAffinityPolicy", "nodeTaintsPolicy"})

CONTAINER_FIELDS = frozenset({
    "name", "image", "command", "args", "workingDir", "ports", "env", "envFrom", "resources", "volumeMounts",
    "volumeDevices", "livenessProbe", "readinessProbe", "startupProbe", "lifecycle", "terminationMessagePath",
    "terminationMessagePolicy", "imagePullPolicy", "securityContext", "stdin", "stdinOnce", "tty",
    "restartPolicy", "resizePolicy",
})
CONTAINER_PORT_FIELDS = frozenset({"name", "containerPort", "protocol", "hostPort"})
VOLUME_MOUNT_FIELDS = frozenset({
    "name", "mountPath", "readOnly", "subPath", "subPathExpr", "recursiveReadOnly", "mountPropagation",
})
POD_SECURITY_FIELDS = frozenset({
    "runAsUser", "runAsGroup", "runAsNonRoot", "fsGroup", "fsGroupChangePolicy", "supplementalGroups",
    "supplementalGroupsPolicy", "seccompProfile", "appArmorProfile", "seLinuxOptions", "seLinuxChangePolicy",
})
CONTAINER_SECURITY_FIELDS = frozenset({
    "runAsUser", "runAsGroup", "runAsNonRoot", "readOnlyRootFilesystem", "allowPrivilegeEscalation",
    "privileged", "capabilities", "seccompProfile", "appArmorProfile", "procMount", "seLinuxOptions",
})
SECURITY_REASONS = {
    "sysctls": "sysctls change the node's kernel settings for the pod",
    "windowsOptions": "Windows host-process options are not allowed",
}
CONFINED_PROFILES = ("RuntimeDefault", "Localhost")
SELINUX_TYPES = ("container_t", "container_init_t", "container_kvm_t", "container_engine_t")
# Pod Security "baseline": the capabilities a container may add. "restricted" allows only NET_BIND_SERVICE.
BASELINE_CAPABILITIES = frozenset({
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE", "SETFCAP",
    "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
})
RESTRICTED_CAPABILITIES = frozenset({"NET_BIND_SERVICE"})
POD_SECURITY_LEVELS = ("baseline", "restricted")

VOLUME_TYPES = ("configMap", "secret", "emptyDir", "projected", "downwardAPI", "persistentVolumeClaim", "ephemeral")
PROJECTED_SOURCES = ("configMap", "secret", "downwardAPI", "serviceAccountToken")
PVC_SPEC_FIELDS = frozenset({"accessModes", "resources", "storageClassName", "volumeMode", "dataSource",
                             "dataSourceRef"})
PVC_REASONS = {
    "volumeName": "it would bind an existing PersistentVolume, possibly another namespace's data",
    "selector": "it would bind an existing PersistentVolume by its labels",
    "volumeAttributesClassName": "volume attribute classes are cluster-wide settings",
}
# (apiGroup, kind) a PVC may be cloned or restored from, always inside the preview's namespace.
PVC_DATA_SOURCES = {("", "PersistentVolumeClaim"), ("snapshot.storage.k8s.io", "VolumeSnapshot")}

SECRET_TYPES = ("Opaque", "kubernetes.io/tls", "kubernetes.io/dockerconfigjson", "kubernetes.io/dockercfg",
                "kubernetes.io/basic-auth", "kubernetes.io/ssh-auth")
PDB_SPEC_FIELDS = frozenset({"selector", "maxUnavailable", "unhealthyPodEvictionPolicy"})
# Pods that are not ready may always be evicted: a budget over pods that never become ready would otherwise block
# every node drain (the default, IfHealthyBudget, counts them against the budget). Left out, it is rendered so.
PDB_EVICTION_POLICY = "AlwaysAllow"
# Jobs and CronJobs: bounded churn. The namespace's quota also counts them (guardrails.py).
MIN_CRON_INTERVAL_MINUTES = 15
CRON_MACROS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
JOB_BOUNDS = {  # field -> (least, most)
    "completions": (1, 10), "parallelism": (0, 5), "backoffLimit": (0, 6), "activeDeadlineSeconds": (1, 86_400),
    "ttlSecondsAfterFinished": (0, 7 * 86_400), "backoffLimitPerIndex": (0, 6), "maxFailedIndexes": (0, 10),
}
CRONJOB_BOUNDS = {"successfulJobsHistoryLimit": (0, 3), "failedJobsHistoryLimit": (0, 3),
                  "startingDeadlineSeconds": (10, 86_400)}
CRON_CONCURRENCY_POLICIES = ("Forbid", "Replace")  # left out: rendered Forbid (Allow lets runs pile up)
PULL_POLICY = "Always"  # rendered on every container unless the repository allows cached images
PERCENT_RE = re.compile(r"(100|[1-9][0-9]?)%")
SIMPLE_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
