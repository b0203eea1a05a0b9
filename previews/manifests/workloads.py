"""Validation of what runs pods: pod specs, containers, security contexts, volumes, claims, and the kinds
around them (StatefulSet claim templates, PodDisruptionBudgets, HorizontalPodAutoscalers)."""

from __future__ import annotations

from collections.abc import Iterator

from previews.manifests.allowlists import (
    AFFINITY_FIELDS,
    AFFINITY_RULE_FIELDS,
    AFFINITY_TERM_FIELDS,
    AFFINITY_TERM_REASONS,
    BASELINE_CAPABILITIES,
    CONFINED_PROFILES,
    CONTAINER_FIELDS,
    CONTAINER_PORT_FIELDS,
    CONTAINER_SECURITY_FIELDS,
    DNS_POLICIES,
    NODE_SELECTOR_KEYS,
    PDB_EVICTION_POLICY,
    PDB_SPEC_FIELDS,
    PERCENT_RE,
    POD_SECURITY_FIELDS,
    POD_SPEC_FIELDS,
    POD_SPEC_REASONS,
    PROJECTED_SOURCES,
    PVC_DATA_SOURCES,
    PVC_REASONS,
    PVC_SPEC_FIELDS,
    RESTRICTED_CAPABILITIES,
    SECURITY_REASONS,
    SELINUX_TYPES,
    TOPOLOGY_SPREAD_FIELDS,
    VOLUME_MOUNT_FIELDS,
    VOLUME_TYPES,
)
from previews.manifests.context import RenderContext
from previews.manifests.metadata import validate_metadata
from previews.manifests.objects import as_dict, as_list, containers, is_empty
from previews.manifests.problems import Problem, expect_dict, join_path, only, quoted, quoted_bare
from previews.validators import IMAGE_RE


def validate_pod_spec(i: int, path: str, pod_spec: dict, ctx: RenderContext) -> Iterator[Problem]:
    reasons = dict(POD_SPEC_REASONS)
    yield from only(i, path, {k: v for k, v in pod_spec.items() if not is_empty(v)}, POD_SPEC_FIELDS, "pod spec",
                    reasons)
    if not as_list(pod_spec.get("containers")):
        yield Problem(i, f"{path}.containers", "a pod needs at least one container")
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if pod_spec.get(flag):
            yield Problem(i, f"{path}.{flag}", f"{flag} is not allowed")
    if pod_spec.get("hostUsers") not in (None, True):
        yield Problem(i, f"{path}.hostUsers", "hostUsers: false needs user-namespace support on the node; leave it "
                                              "out")
    for key in as_dict(pod_spec.get("nodeSelector")):
        if key not in NODE_SELECTOR_KEYS:
            yield Problem(i, join_path(f"{path}.nodeSelector", key), "only kubernetes.io/os and kubernetes.io/arch may "
                                                                  "be selected; previews are not pinned to nodes")
    if not is_empty(pod_spec.get("tolerations")):
        yield Problem(i, f"{path}.tolerations", "tolerations are not allowed: they let a pod onto tainted nodes "
                                                "(control plane, dedicated pools)")
    dns_policy = pod_spec.get("dnsPolicy")
    if dns_policy is not None and dns_policy not in DNS_POLICIES:
        yield Problem(i, f"{path}.dnsPolicy", f"dnsPolicy {quoted(dns_policy)} is not allowed; use "
                                              f"{' or '.join(DNS_POLICIES)}")
    affinity = pod_spec.get("affinity")
    yield from expect_dict(i, f"{path}.affinity", affinity)
    yield from only(i, f"{path}.affinity", {k: v for k, v in as_dict(affinity).items() if not is_empty(v)},
                    AFFINITY_FIELDS, "affinity", {"nodeAffinity": "it pins previews to chosen nodes"})
    yield from _validate_pod_affinity(i, f"{path}.affinity", as_dict(affinity))
    for k, constraint in enumerate(as_list(pod_spec.get("topologySpreadConstraints"))):
        yield from only(i, f"{path}.topologySpreadConstraints[{k}]", as_dict(constraint), TOPOLOGY_SPREAD_FIELDS,
                        "topology spread constraint")
    pod_security = pod_spec.get("securityContext")
    yield from expect_dict(i, f"{path}.securityContext", pod_security)
    pod_security = as_dict(pod_security)
    yield from _validate_security_context(i, f"{path}.securityContext", pod_security, POD_SECURITY_FIELDS)
    for j, volume in enumerate(as_list(pod_spec.get("volumes"))):
        yield from _validate_volume(i, f"{path}.volumes[{j}]", volume, ctx)
    for cpath, container in containers(pod_spec):
        yield from _validate_container(i, f"{path}.{cpath}", container, pod_security, ctx)


def _validate_pod_affinity(i: int, path: str, affinity: dict) -> Iterator[Problem]:
    for kind in AFFINITY_FIELDS:
        rules = as_dict(affinity.get(kind))
        yield from only(i, f"{path}.{kind}", rules, AFFINITY_RULE_FIELDS, kind)
        terms = [(f"{path}.{kind}.requiredDuringSchedulingIgnoredDuringExecution[{k}]", as_dict(term))
                 for k, term in enumerate(as_list(rules.get("requiredDuringSchedulingIgnoredDuringExecution")))]
        for k, weighted in enumerate(as_list(rules.get("preferredDuringSchedulingIgnoredDuringExecution"))):
            wpath = f"{path}.{kind}.preferredDuringSchedulingIgnoredDuringExecution[{k}]"
            yield from only(i, wpath, as_dict(weighted), ("weight", "podAffinityTerm"), "weighted affinity term")
            terms.append((f"{wpath}.podAffinityTerm", as_dict(as_dict(weighted).get("podAffinityTerm"))))
        for tpath, term in terms:
            yield from only(i, tpath, {k: v for k, v in term.items() if not (k == "namespaces" and is_empty(v))},
                            AFFINITY_TERM_FIELDS, "affinity term", AFFINITY_TERM_REASONS)


def _validate_security_context(i: int, path: str, security: dict, allowed: frozenset[str]) -> Iterator[Problem]:
    yield from only(i, path, security, allowed, "securityContext", SECURITY_REASONS)
    for name in ("seccompProfile", "appArmorProfile"):
        profile = security.get(name)
        if profile is not None:
            kind = as_dict(profile).get("type")
            if kind not in CONFINED_PROFILES:
                yield Problem(i, f"{path}.{name}.type", f"{quoted(kind)} is not allowed; use "
                                                        f"{' or '.join(CONFINED_PROFILES)}")
    selinux = security.get("seLinuxOptions")
    if selinux is not None:
        yield from only(i, f"{path}.seLinuxOptions", as_dict(selinux), ("type", "level"), "seLinuxOptions")
        selinux_type = as_dict(selinux).get("type")
        if selinux_type not in (None, "", *SELINUX_TYPES):
            yield Problem(i, f"{path}.seLinuxOptions.type", f"{quoted(selinux_type)} is not allowed; use one of "
                                                            f"{', '.join(SELINUX_TYPES)}")


def _validate_container(i: int, path: str, container: dict, pod_security: dict,
                        ctx: RenderContext) -> Iterator[Problem]:
    yield from only(i, path, container, CONTAINER_FIELDS, "container")
    security = container.get("securityContext")
    yield from expect_dict(i, f"{path}.securityContext", security)
    security = as_dict(security)
    spath = f"{path}.securityContext"
    yield from _validate_security_context(i, spath, security, CONTAINER_SECURITY_FIELDS)
    if security.get("privileged"):
        yield Problem(i, f"{spath}.privileged", "privileged containers are not allowed")
    if security.get("procMount") not in (None, "Default"):
        yield Problem(i, f"{spath}.procMount", "only the Default procMount is allowed")
    capabilities = as_dict(security.get("capabilities"))
    yield from only(i, f"{spath}.capabilities", capabilities, ("add", "drop"), "capabilities")
    restricted = ctx.policy.pod_security == "restricted"
    addable = RESTRICTED_CAPABILITIES if restricted else BASELINE_CAPABILITIES
    for k, capability in enumerate(as_list(capabilities.get("add"))):
        if capability not in addable:
            yield Problem(i, f"{spath}.capabilities.add[{k}]",
                          f"adding {quoted(capability)} is not allowed under Pod Security {ctx.policy.pod_security}; "
                          f"allowed: {', '.join(sorted(addable))}")
    if restricted:
        yield from _restricted_container(i, spath, security, pod_security, capabilities)
    for k, port in enumerate(as_list(container.get("ports"))):
        port = as_dict(port)
        yield from only(i, f"{path}.ports[{k}]", port, CONTAINER_PORT_FIELDS, "container port",
                        {"hostIP": "containers do not bind to the node's addresses"})
        if port.get("hostPort"):
            yield Problem(i, f"{path}.ports[{k}].hostPort", "hostPort is not allowed")
    for k, mount in enumerate(as_list(container.get("volumeMounts"))):
        mount = as_dict(mount)
        yield from only(i, f"{path}.volumeMounts[{k}]", mount, VOLUME_MOUNT_FIELDS, "volume mount")
        if mount.get("mountPropagation") not in (None, "None"):
            yield Problem(i, f"{path}.volumeMounts[{k}].mountPropagation", "mount propagation to or from the "
                                                                           "node is not allowed")
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        yield from _validate_handler(i, f"{path}.{probe}", as_dict(container.get(probe)))
    for hook in ("postStart", "preStop"):
        handler = as_dict(as_dict(container.get("lifecycle")).get(hook))
        yield from _validate_handler(i, f"{path}.lifecycle.{hook}", handler)
    image = container.get("image")
    if not isinstance(image, str) or not IMAGE_RE.fullmatch(image):
        yield Problem(i, f"{path}.image", f"{quoted(image)} is not an image reference")


def _restricted_container(i: int, spath: str, security: dict, pod_security: dict,
                          capabilities: dict) -> Iterator[Problem]:
    def effective(name: str):
        return security.get(name, pod_security.get(name))

    if security.get("allowPrivilegeEscalation") is not False:
        yield Problem(i, f"{spath}.allowPrivilegeEscalation", "Pod Security restricted needs it set to false")
    if "ALL" not in as_list(capabilities.get("drop")):
        yield Problem(i, f"{spath}.capabilities.drop", "Pod Security restricted needs ALL dropped")
    if effective("runAsNonRoot") is not True:
        yield Problem(i, f"{spath}.runAsNonRoot", "Pod Security restricted needs runAsNonRoot: true (here or on "
                                                  "the pod)")
    if effective("runAsUser") == 0:
        yield Problem(i, f"{spath}.runAsUser", "Pod Security restricted does not allow running as user 0")
    if as_dict(effective("seccompProfile")).get("type") not in CONFINED_PROFILES:
        yield Problem(i, f"{spath}.seccompProfile", "Pod Security restricted needs a seccompProfile of type "
                                                    "RuntimeDefault or Localhost (here or on the pod)")


def _validate_handler(i: int, path: str, handler: dict) -> Iterator[Problem]:
    """Probes and lifecycle hooks run from the node: they may only reach the pod itself."""
    for action in ("httpGet", "tcpSocket"):
        if as_dict(handler.get(action)).get("host"):
            yield Problem(i, f"{path}.{action}.host", "the kubelet would connect from the node to another host; "
                                                      "probes and hooks may only reach the pod itself")


def _validate_volume(i: int, path: str, volume, ctx: RenderContext) -> Iterator[Problem]:
    if not isinstance(volume, dict):
        yield Problem(i, path, "expected a volume (a mapping)")
        return
    sources = [key for key in volume if key != "name"]
    allowed = ", ".join(VOLUME_TYPES)
    for source in sources:
        if source not in VOLUME_TYPES:
            yield Problem(i, join_path(path, source), f"{quoted_bare(source)} volumes are not allowed; allowed volume "
                                                  f"types: {allowed}")
    if len(sources) != 1:
        yield Problem(i, path, "a volume needs exactly one source")
    if "projected" in volume:
        for k, projection in enumerate(as_list(as_dict(volume["projected"]).get("sources"))):
            yield from only(i, f"{path}.projected.sources[{k}]", as_dict(projection), PROJECTED_SOURCES,
                            "projected volume source")
            token = as_dict(as_dict(projection).get("serviceAccountToken"))
            audience = token.get("audience")
            if audience not in (None, "") and audience not in ctx.policy.token_audiences:
                allowed = ", ".join(ctx.policy.token_audiences) or "none"
                yield Problem(i, f"{path}.projected.sources[{k}].serviceAccountToken.audience",
                              f"a token for {quoted(audience)} is not allowed: an STS, Vault or workload-identity "
                              f"pool would accept it as this pod's identity; the repository allows: {allowed} "
                              "(token_audiences)")
    if "ephemeral" in volume:
        template = as_dict(as_dict(volume["ephemeral"]).get("volumeClaimTemplate"))
        tpath = f"{path}.ephemeral.volumeClaimTemplate"
        yield from validate_metadata(i, f"{tpath}.metadata", as_dict(template.get("metadata")), policy=ctx.policy)
        yield from _validate_pvc_spec(i, f"{tpath}.spec", as_dict(template.get("spec")), ctx)


def _validate_pvc_spec(i: int, path: str, spec: dict, ctx: RenderContext) -> Iterator[Problem]:
    yield from only(i, path, spec, PVC_SPEC_FIELDS, "PersistentVolumeClaim spec", PVC_REASONS)
    if "storageClassName" in spec and spec["storageClassName"] is not None:
        name = spec["storageClassName"]
        if name == "":
            yield Problem(i, f"{path}.storageClassName", "an empty storageClassName would bind a pre-provisioned "
                                                         "PersistentVolume; leave it out for the default class")
        elif name not in ctx.policy.storage_classes:
            allowed = ", ".join(ctx.policy.storage_classes) or "none: leave storageClassName out for the default"
            yield Problem(i, f"{path}.storageClassName", f"storage class {quoted(name)} is not allowed for this "
                                                         f"repository; allowed: {allowed}")
    for source_field in ("dataSource", "dataSourceRef"):
        source = spec.get(source_field)
        if source is None:
            continue
        source = as_dict(source)
        key = (source.get("apiGroup") or "", source.get("kind"))
        if key not in PVC_DATA_SOURCES:
            yield Problem(i, f"{path}.{source_field}.kind", f"{quoted(key[1])} is not allowed as a data source; "
                                                            "clone a PersistentVolumeClaim or restore a "
                                                            "VolumeSnapshot of this namespace")
        if source.get("namespace") not in (None, "", ctx.namespace):
            yield Problem(i, f"{path}.{source_field}.namespace", "data sources must be in the preview's own "
                                                                 f"namespace, not {quoted(source.get('namespace'))}")


def validate_pvc_object(i: int, obj: dict, spec: dict, ctx: RenderContext) -> Iterator[Problem]:
    yield from _validate_pvc_spec(i, "spec", spec, ctx)


def validate_statefulset(i: int, obj: dict, spec: dict, ctx: RenderContext) -> Iterator[Problem]:
    for k, template in enumerate(as_list(spec.get("volumeClaimTemplates"))):
        template = as_dict(template)
        yield from validate_metadata(i, f"spec.volumeClaimTemplates[{k}].metadata", as_dict(template.get("metadata")),
                                     policy=ctx.policy)
        yield from _validate_pvc_spec(i, f"spec.volumeClaimTemplates[{k}].spec", as_dict(template.get("spec")), ctx)


def validate_pdb(i: int, obj: dict, spec: dict, ctx: RenderContext) -> Iterator[Problem]:
    yield from only(i, "spec", spec, PDB_SPEC_FIELDS, "PodDisruptionBudget spec", {
        "minAvailable": "a minimum can equal the replica count and block every node drain; use maxUnavailable"})
    selector = as_dict(spec.get("selector"))
    yield from only(i, "spec.selector", selector, ("matchLabels",), "PodDisruptionBudget selector", {
        "matchExpressions": "select a budget's pods by matchLabels only, so that budgets can be proven not to "
                            "overlap (two budgets over one pod make every eviction of it fail)"})
    if not selector.get("matchLabels"):
        yield Problem(i, "spec.selector", "a PodDisruptionBudget must select its pods by matchLabels; an empty "
                                          "selector covers every pod in the namespace")
    policy = spec.get("unhealthyPodEvictionPolicy")
    if policy not in (None, PDB_EVICTION_POLICY):
        yield Problem(i, "spec.unhealthyPodEvictionPolicy", f"{quoted(policy)} would let pods that never become "
                                                            "ready block node drains; use AlwaysAllow (left out: "
                                                            "AlwaysAllow)")
    budget = spec.get("maxUnavailable")
    allows = (isinstance(budget, int) and not isinstance(budget, bool) and budget >= 1) or (
        isinstance(budget, str) and PERCENT_RE.fullmatch(budget) is not None)
    if not allows:
        yield Problem(i, "spec.maxUnavailable", f"{quoted(budget)} would block node drains; allow at least one "
                                                "disruption (1 or more, or a percentage from 1%)")


def pdb_overlaps(objects: list[dict]) -> Iterator[Problem]:
    """Two PodDisruptionBudgets may cover the same pod unless their matchLabels give one key different values:
    then no pod matches both. A pod under two budgets cannot be evicted at all (the eviction API answers 500)."""
    budgets = [(i, as_dict(as_dict(as_dict(o.get("spec")).get("selector")).get("matchLabels")))
               for i, o in enumerate(objects) if o.get("kind") == "PodDisruptionBudget"]
    for n, (i, labels) in enumerate(budgets):
        for j, other in budgets[:n]:
            if not any(key in other and other[key] != value for key, value in labels.items()):
                yield Problem(i, "spec.selector.matchLabels", f"this budget and the one in document {j + 1} could "
                                                              "cover the same pods; give them one label key with "
                                                              "different values (two budgets over a pod block its "
                                                              "eviction)")


def validate_hpa(i: int, obj: dict, spec: dict, ctx: RenderContext) -> Iterator[Problem]:
    target = as_dict(spec.get("scaleTargetRef"))
    if (target.get("apiVersion"), target.get("kind")) not in (("apps/v1", "Deployment"), ("apps/v1", "StatefulSet")):
        yield Problem(i, "spec.scaleTargetRef", "an autoscaler may scale only a Deployment or StatefulSet (apps/v1)")
