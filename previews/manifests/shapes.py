"""Types before values: every field the policy or the renderer reads has one JSON type, checked at every depth
before any rule looks at a value.

Kubernetes' field names keep their type wherever they appear (a `containers` is always a list of mappings, an
`image` always a string), so one table by field name covers every kind. Fields whose type depends on where they
are (`port`, `path`, `requiredDuringScheduling...`) are left to the kind's own checks. Free-form maps (labels,
annotations, ConfigMap data, resource requests) are not descended into; their values must be scalars.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from decimal import Decimal

from previews.cost import quantity
from previews.manifests.problems import Problem, join_path, quoted

MAP, LIST, LIST_OF_MAPS, LIST_OF_STR, STR, INT, BOOL, SCALAR = (
    "a mapping", "a list", "a list of mappings", "a list of strings", "a string", "an integer", "a boolean",
    "a single value (not a list or mapping)")

_FIELDS: dict[str, str] = {}
for _type, _names in {
    MAP: """metadata spec template selector securityContext capabilities seccompProfile appArmorProfile seLinuxOptions
        resources affinity podAffinity podAntiAffinity nodeAffinity podAffinityTerm labelSelector namespaceSelector
        http backend service dataSource dataSourceRef jobTemplate scaleTargetRef configMap secret emptyDir projected
        downwardAPI persistentVolumeClaim ephemeral volumeClaimTemplate serviceAccountToken httpGet tcpSocket exec
        grpc lifecycle postStart preStop livenessProbe readinessProbe startupProbe requestHeaderModifier
        responseHeaderModifier urlRewrite requestRedirect requestMirror backendRef timeouts valueFrom fieldRef
        configMapRef secretRef configMapKeyRef secretKeyRef resourceFieldRef dnsConfig sessionAffinityConfig
        behavior scaleUp scaleDown fraction strategy rollingUpdate updateStrategy persistentVolumeClaimRetentionPolicy
        clientIP sleep os podFailurePolicy successPolicy status""",
    LIST_OF_MAPS: """containers initContainers ephemeralContainers volumes ports env envFrom volumeMounts volumeDevices
        rules paths tls parentRefs matches filters backendRefs headers queryParams tolerations
        topologySpreadConstraints volumeClaimTemplates sources items imagePullSecrets hostAliases readinessGates
        preferredDuringSchedulingIgnoredDuringExecution metrics secrets set matchExpressions policies options
        resizePolicy""",
    LIST: "add",
    LIST_OF_STR: """hosts hostnames accessModes command args drop remove clusterIPs ipFamilies namespaces values
        matchLabelKeys mismatchLabelKeys finalizers nameservers searches""",
    STR: """kind apiVersion name namespace imagePullPolicy host pathType type secretName storageClassName
        serviceAccountName serviceAccount restartPolicy dnsPolicy schedule hostname sectionName group apiGroup method
        scheme mountPath subPath subPathExpr topologyKey whenUnsatisfiable unhealthyPodEvictionPolicy ingressClassName
        concurrencyPolicy timeZone podManagementPolicy serviceName operator level audience protocol appProtocol
        mountPropagation procMount sessionAffinity internalTrafficPolicy ipFamilyPolicy externalTrafficPolicy clusterIP
        workingDir terminationMessagePath terminationMessagePolicy fieldPath completionMode claimName
        replaceFullPath replacePrefixMatch medium ip key localhostProfile user role""",
    INT: """replicas containerPort hostPort number weight percent statusCode maxSkew minReplicas maxReplicas
        backoffLimit backoffLimitPerIndex maxFailedIndexes completions parallelism activeDeadlineSeconds
        ttlSecondsAfterFinished successfulJobsHistoryLimit failedJobsHistoryLimit startingDeadlineSeconds
        terminationGracePeriodSeconds expirationSeconds runAsUser runAsGroup fsGroup periodSeconds timeoutSeconds
        initialDelaySeconds failureThreshold successThreshold defaultMode mode revisionHistoryLimit
        progressDeadlineSeconds minReadySeconds minDomains numerator denominator seconds timeoutSeconds""",
    BOOL: """privileged allowPrivilegeEscalation readOnlyRootFilesystem runAsNonRoot hostNetwork hostPID hostIPC
        hostUsers automountServiceAccountToken readOnly suspend stdin stdinOnce tty immutable optional
        enableServiceLinks shareProcessNamespace publishNotReadyAddresses setHostnameAsFQDN""",
    SCALAR: "value maxUnavailable maxSurge targetPort averageValue sizeLimit storage",
}.items():
    for _name in _names.split():
        _FIELDS[_name] = _type

# Where a field's type depends on its parent: (parent field, field) -> type.
_IN_PARENT = {
    ("capabilities", "add"): LIST_OF_STR,
    ("requestHeaderModifier", "add"): LIST_OF_MAPS, ("responseHeaderModifier", "add"): LIST_OF_MAPS,
    ("service", "port"): MAP, ("httpGet", "port"): SCALAR, ("tcpSocket", "port"): SCALAR, ("grpc", "port"): INT,
    ("backendRefs", "port"): INT, ("backendRef", "port"): INT, ("requestRedirect", "port"): INT,
    ("ports", "port"): INT,
    ("matches", "path"): MAP, ("urlRewrite", "path"): MAP, ("requestRedirect", "path"): MAP,
    ("paths", "path"): STR, ("httpGet", "path"): STR, ("items", "path"): STR, ("serviceAccountToken", "path"): STR,
}

# Maps whose keys are the user's own (label keys, ConfigMap keys, resource names): not descended into.
FREE_FORM_STRINGS = frozenset({"labels", "annotations", "data", "stringData", "binaryData", "matchLabels",
                               "nodeSelector"})
FREE_FORM_QUANTITIES = frozenset({"requests", "limits", "capacity"})


# Quantities as Kubernetes writes them, without the exponent form (1e3): the cost code and these bounds read
# the suffixes only, so an exponent would slip past them.
QUANTITY_RE = re.compile(r"\+?([0-9]{1,15}(\.[0-9]{0,9})?|\.[0-9]{1,9})(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?")
MAX_CPU = Decimal(1000)  # cores
MAX_AMOUNT = Decimal(2**50)  # bytes (1 PiB) of memory or storage; units of any other resource


def _quantity_problems(i: int, path: str, resource: str, value: object) -> Iterator[Problem]:
    """A resource quantity is a number within bounds that no real preview reaches, so that sums over every
    preview (the Costs page, /costs) stay ordinary numbers."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        yield Problem(i, path, f"expected a quantity (such as 100m or 1Gi), got {_got(value)}")
        return
    text = value if isinstance(value, str) else repr(value)
    if not QUANTITY_RE.fullmatch(text):
        yield Problem(i, path, f"{quoted(value)} is not a quantity such as 250m, 1.5 or 512Mi (no exponents, no "
                               "signs)")
        return
    bound = MAX_CPU if resource == "cpu" else MAX_AMOUNT
    if quantity(text) > bound:
        yield Problem(i, path, f"{quoted(value)} is more than any preview may ask for ({bound} "
                               f"{'cores' if resource == 'cpu' else 'bytes or units'})")


def _is(value: object, expected: str) -> bool:
    if expected == MAP:
        return isinstance(value, dict)
    if expected == LIST:
        return isinstance(value, list)
    if expected == LIST_OF_MAPS:
        return isinstance(value, list) and all(isinstance(item, dict) for item in value)
    if expected == LIST_OF_STR:
        return isinstance(value, list) and all(isinstance(item, str) for item in value)
    if expected == STR:
        return isinstance(value, str)
    if expected == INT:
        return isinstance(value, int) and not isinstance(value, bool)
    if expected == BOOL:
        return isinstance(value, bool)
    return not isinstance(value, dict | list)


def _got(value: object) -> str:
    if isinstance(value, list) and value and not all(isinstance(item, type(value[0])) for item in value):
        return "a list of mixed types"
    if isinstance(value, list) and value:
        return f"a list of {type(value[0]).__name__}"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


def shape_problems(i: int, kind: str, obj: dict) -> Iterator[Problem]:
    """Every field of `obj` whose type is not its name's (null is always allowed: an omitted field). Iterative."""
    stack: list[tuple[str, str, str, object]] = [("", "", "", obj)]
    while stack:
        path, parent, name, value = stack.pop()
        if value is None:
            continue
        expected = _IN_PARENT.get((parent, name)) or _FIELDS.get(name)
        if name in FREE_FORM_STRINGS or (name == "selector" and kind == "Service" and path == "spec.selector"):
            if not isinstance(value, dict):
                yield Problem(i, path, f"expected a mapping of strings, got {_got(value)}")
                continue
            for key, item in value.items():
                if not isinstance(item, str) and item is not None:
                    yield Problem(i, join_path(path, key), f"expected a string, got {_got(item)}")
            continue
        if name in FREE_FORM_QUANTITIES:
            if not isinstance(value, dict):
                yield Problem(i, path, f"expected a mapping of quantities, got {_got(value)}")
                continue
            for key, item in value.items():
                yield from _quantity_problems(i, join_path(path, key), key, item)
            continue
        if expected is not None and not _is(value, expected):
            yield Problem(i, path, f"expected {expected}, got {_got(value)}")
            continue
        if isinstance(value, dict):
            # The fields of a list's item (a mapping without a name of its own) are known by the list's name.
            parent_name = name or parent
            stack.extend((join_path(path, key), parent_name, key, child) for key, child in reversed(value.items())
                         if isinstance(key, str))
        elif isinstance(value, list):
            stack.extend((f"{path}[{j}]", name, "", child) for j, child in reversed(list(enumerate(value))))
