"""deploy/ on the real control plane: it applies cleanly, and its RBAC is least privilege.

The matrix is checked twice: with SubjectAccessReviews (what RBAC allows), and with real requests
made with the ServiceAccount's own token (RBAC plus the ValidatingAdmissionPolicies), ending with a
real deploy and teardown of a preview by the service running under that ServiceAccount.
"""

import subprocess
import uuid
from pathlib import Path

import pytest
import yaml
from kubernetes import client, config

from previews import provisioning, services
from previews.gateways import kube
from previews.models import Preview
from tests.conftest import ROOT, InProcessWatcher, wait_until

pytestmark = pytest.mark.kube
SA = "system:serviceaccount:previews-system:previews"
SA_GROUPS = ["system:serviceaccounts", "system:serviceaccounts:previews-system", "system:authenticated"]
MANAGED = {"app.kubernetes.io/managed-by": "pr-previews"}


def kubectl(kubeconfig: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["kubectl", "--kubeconfig", kubeconfig, *args], capture_output=True, text=True,
                          timeout=120)


@pytest.fixture(scope="module")
def deployed(kubeconfig_path, kube_api):
    """deploy/ applied: the namespace first (a server dry-run needs it), then a dry-run, then for real."""
    core = client.CoreV1Api(kube_api)

    def not_terminating() -> bool:  # an earlier run's teardown (delete --wait=false) may still be finishing
        try:
            return core.read_namespace("previews-system").status.phase != "Terminating"
        except client.ApiException as exc:
            return exc.status == 404

    wait_until(not_terminating, timeout=180, message="an earlier run's previews-system namespace to be gone")
    first = kubectl(kubeconfig_path, "apply", "--server-side", "-f", str(ROOT / "deploy" / "namespace.yaml"))
    assert first.returncode == 0, first.stderr
    dry = kubectl(kubeconfig_path, "apply", "-k", str(ROOT / "deploy"), "--server-side", "--dry-run=server")
    assert dry.returncode == 0, dry.stderr
    real = kubectl(kubeconfig_path, "apply", "-k", str(ROOT / "deploy"), "--server-side")
    assert real.returncode == 0, real.stderr
    yield real.stdout
    kubectl(kubeconfig_path, "delete", "-k", str(ROOT / "deploy"), "--wait=false", "--ignore-not-found")


def service_account_kubeconfig(kube_api, kubeconfig_path: str, directory: Path, name: str) -> str:
    """A kubeconfig that authenticates with a real token of one of the service's ServiceAccounts."""
    token = client.CoreV1Api(kube_api).create_namespaced_service_account_token(
        name, "previews-system", client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600))).status.token
    admin = yaml.safe_load(Path(kubeconfig_path).read_text())
    path = directory / f"{name}.kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "clusters": admin["clusters"],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": admin["clusters"][0]["name"], "user": name}}],
        "current-context": name}))
    return str(path)


@pytest.fixture(scope="module")
def sa_api(deployed, kube_api, kubeconfig_path, tmp_path_factory):
    """An ApiClient authenticated with a real token of the service's ServiceAccount."""
    path = service_account_kubeconfig(kube_api, kubeconfig_path, tmp_path_factory.mktemp("sa"), "previews")
    api = config.new_client_from_config(config_file=str(path))
    me = client.AuthenticationV1Api(api).create_self_subject_review(client.V1SelfSubjectReview())
    assert me.status.user_info.username == SA

    # The API server picks up new admission policies on its next policy refresh (seconds later), each
    # policy on its own: wait until both refuse what they are there to refuse.
    probe = client.V1Namespace(metadata=client.V1ObjectMeta(name=f"pr-probe{uuid.uuid4().hex[:6]}"))
    binding = {"metadata": {"name": "probe"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                           "name": "previews-preview-namespace"},
               "subjects": [{"kind": "ServiceAccount", "name": "previews", "namespace": "previews-system"}]}

    def refused(call) -> bool:
        try:
            call()
        except client.ApiException as exc:
            return exc.status in (403, 422)
        return False

    def policies_enforced() -> bool:
        return refused(lambda: client.CoreV1Api(api).create_namespace(probe, dry_run="All")) and refused(
            lambda: client.RbacAuthorizationV1Api(api).create_namespaced_role_binding(
                "kube-system", binding, dry_run="All"))

    wait_until(policies_enforced, timeout=60, interval=0.5, message="the admission policies to take effect")
    return str(path), api


def allowed(kube_api, verb: str, resource: str, group: str = "", namespace: str = "", name: str = "",
            subresource: str = "", user: str = SA) -> bool:
    review = client.V1SubjectAccessReview(spec=client.V1SubjectAccessReviewSpec(
        user=user, groups=SA_GROUPS, resource_attributes=client.V1ResourceAttributes(
            verb=verb, resource=resource, group=group, namespace=namespace or None, name=name or None,
            subresource=subresource or None)))
    return client.AuthorizationV1Api(kube_api).create_subject_access_review(review).status.allowed


def test_deploy_applies_to_the_control_plane(deployed, kube_api):
    assert "deployment.apps/previews-web serverside-applied" in deployed
    web = client.AppsV1Api(kube_api).read_namespaced_deployment("previews-web", "previews-system")
    assert web.spec.replicas == 2
    container = web.spec.template.spec.containers[0]
    assert container.readiness_probe.http_get.path == "/readyz"
    assert container.liveness_probe.http_get.path == "/healthz"
    assert container.resources.limits and container.security_context.allow_privilege_escalation is False


RBAC_YES = [
    ("list", "namespaces", "", ""), ("watch", "namespaces", "", ""), ("create", "namespaces", "", ""),
    ("delete", "namespaces", "", ""), ("create", "rolebindings", "rbac.authorization.k8s.io", "pr-1"),
]
RBAC_NO = [
    ("create", "deployments", "apps", "kube-system"), ("create", "deployments", "apps", "staging"),
    ("create", "deployments", "apps", "default"), ("get", "secrets", "", "kube-system"),
    ("create", "configmaps", "", "default"), ("delete", "pods", "", "kube-system"),
    ("create", "deployments", "apps", "pr-1"),  # only after the service binds its role there
    ("create", "clusterrolebindings", "rbac.authorization.k8s.io", ""),
    ("create", "clusterroles", "rbac.authorization.k8s.io", ""),
    ("escalate", "clusterroles", "rbac.authorization.k8s.io", ""),
    ("escalate", "roles", "rbac.authorization.k8s.io", "pr-1"),
    ("impersonate", "users", "", ""), ("impersonate", "serviceaccounts", "", "kube-system"),
    ("impersonate", "groups", "", ""),
    ("get", "nodes", "", ""), ("list", "nodes", "", ""), ("patch", "nodes", "", ""),
    ("create", "validatingadmissionpolicies", "admissionregistration.k8s.io", ""),
    ("delete", "validatingadmissionpolicybindings", "admissionregistration.k8s.io", ""),
]


@pytest.mark.parametrize("verb,resource,group,namespace", RBAC_YES)
def test_rbac_allows_what_the_service_needs(deployed, kube_api, verb, resource, group, namespace):
    assert allowed(kube_api, verb, resource, group, namespace)


@pytest.mark.parametrize("verb,resource,group,namespace", RBAC_NO)
def test_rbac_refuses_everything_else(deployed, kube_api, verb, resource, group, namespace):
    assert not allowed(kube_api, verb, resource, group, namespace)


def test_bind_is_allowed_for_exactly_one_cluster_role(deployed, kube_api):
    group = "rbac.authorization.k8s.io"
    assert allowed(kube_api, "bind", "clusterroles", group, name="previews-preview-namespace")
    assert not allowed(kube_api, "bind", "clusterroles", group, name="cluster-admin")
    assert not allowed(kube_api, "bind", "clusterroles", group, name="admin")
    assert not allowed(kube_api, "bind", "clusterroles", group)


def _refused(call) -> int:
    with pytest.raises(client.ApiException) as info:
        call()
    return info.value.status


@pytest.fixture
def staging(kube_api):
    core = client.CoreV1Api(kube_api)
    try:
        core.read_namespace("staging")
        yield "staging"
    except client.ApiException:
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="staging")))
        yield "staging"
        core.delete_namespace("staging")


def test_as_the_service_account_protected_and_foreign_namespaces_cannot_be_touched(sa_api, make_namespace,
                                                                                     staging):
    _, api = sa_api
    core = client.CoreV1Api(api)
    foreign = make_namespace()
    for name in ("kube-system", "default", "staging", "previews-system", foreign):
        assert _refused(lambda n=name: core.delete_namespace(n, dry_run="All")) in (403, 422), name
    unlabelled = client.V1Namespace(metadata=client.V1ObjectMeta(name=f"pr-x{uuid.uuid4().hex[:6]}"))
    assert _refused(lambda: core.create_namespace(unlabelled, dry_run="All")) in (403, 422)
    patch = {"metadata": {"labels": MANAGED}}
    assert _refused(lambda: core.patch_namespace(foreign, patch, dry_run="All")) in (403, 422)
    labelled = client.V1Namespace(metadata=client.V1ObjectMeta(name=f"pr-x{uuid.uuid4().hex[:6]}", labels=MANAGED))
    assert core.create_namespace(labelled, dry_run="All").metadata.name == labelled.metadata.name


def test_as_the_service_account_roles_can_be_bound_only_in_its_own_namespaces(sa_api, make_namespace):
    _, api = sa_api
    rbac = client.RbacAuthorizationV1Api(api)

    def binding(role: str) -> dict:
        return {"metadata": {"name": "x"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                                       "name": role},
                "subjects": [{"kind": "ServiceAccount", "name": "previews", "namespace": "previews-system"}]}

    assert _refused(lambda: rbac.create_namespaced_role_binding(
        "kube-system", binding("previews-preview-namespace"), dry_run="All")) in (403, 422)
    ours = make_namespace(labels=MANAGED)
    assert _refused(lambda: rbac.create_namespaced_role_binding(ours, binding("cluster-admin"), dry_run="All")) \
        in (403, 422)
    assert rbac.create_namespaced_role_binding(ours, binding("previews-preview-namespace"), dry_run="All")


OUR_SUBJECT = {"kind": "ServiceAccount", "name": "previews", "namespace": "previews-system"}
FOREIGN_SUBJECTS = [
    ("a ServiceAccount in the preview namespace", [{"kind": "ServiceAccount", "name": "default",
                                                    "namespace": "PREVIEW"}]),
    ("another namespace's ServiceAccount", [{"kind": "ServiceAccount", "name": "previews", "namespace": "default"}]),
    ("a user", [{"kind": "User", "name": "mallory", "apiGroup": "rbac.authorization.k8s.io"}]),
    ("every authenticated caller", [{"kind": "Group", "name": "system:authenticated",
                                     "apiGroup": "rbac.authorization.k8s.io"}]),
    ("ours plus another", [OUR_SUBJECT, {"kind": "User", "name": "mallory", "apiGroup": "rbac.authorization.k8s.io"}]),
]


def test_as_the_service_account_its_role_can_be_bound_only_to_itself(sa_api, make_namespace):
    _, api = sa_api
    rbac = client.RbacAuthorizationV1Api(api)
    ours = make_namespace(labels=MANAGED)

    def binding(subjects: list[dict]) -> dict:
        subjects = [{**s, "namespace": ours} if s.get("namespace") == "PREVIEW" else s for s in subjects]
        return {"metadata": {"name": "x"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io",
                                                       "kind": "ClusterRole", "name": "previews-preview-namespace"},
                "subjects": subjects}

    def refused(subjects: list[dict]) -> str:
        try:
            rbac.create_namespaced_role_binding(ours, binding(subjects), dry_run="All")
        except client.ApiException as exc:
            return exc.body if exc.status in (403, 422) else ""
        return ""

    # A policy changed by this apply takes effect at the API server's next refresh.
    wait_until(lambda: refused(FOREIGN_SUBJECTS[0][1]), timeout=60, interval=0.5,
               message="the subject rule to take effect")
    for name, subjects in FOREIGN_SUBJECTS:
        assert "only to its own ServiceAccount" in refused(subjects), name
    assert rbac.create_namespaced_role_binding(ours, binding([OUR_SUBJECT]), dry_run="All")


def test_the_service_deploys_and_tears_down_a_preview_as_its_service_accounts(
        sa_api, preview_repo, settings, monkeypatch, kube_api, kubeconfig_path, tmp_path):
    path, _ = sa_api
    settings.PREVIEWS_NAMESPACE_CLUSTERROLE = "previews-preview-namespace"
    settings.PREVIEWS_SERVICE_ACCOUNT = "previews-system/previews"
    watcher_path = service_account_kubeconfig(kube_api, kubeconfig_path, tmp_path, "previews-watcher")
    # The watcher reads as its own, read-only ServiceAccount: its threads pick the kubeconfig up now.
    settings.PREVIEWS_KUBECONFIG = watcher_path
    kube.reset_clients()
    watcher = InProcessWatcher()
    try:
        wait_until(lambda: watcher.watcher.step(wait=0.1) or watcher.watcher.synced, timeout=30,
                   message="the watcher to list everything it follows")
        assert watcher.watcher.connected
        settings.PREVIEWS_KUBECONFIG = path
        kube.reset_clients()
        preview = services.preview_upsert(
            repository=preview_repo, pr_number=31, actor=services.Actor("token", "ci"),
            request=services.PreviewRequest(head_sha="9" * 40, images=("localhost/previews-sample:pr-31",))).preview
        assert provisioning.deploy(preview.pk, preview.generation) == "applied", Preview.objects.get(
            pk=preview.pk).status_message
        watcher.status_of(preview, "ready")
        binding = client.RbacAuthorizationV1Api(kube_api).read_namespaced_role_binding("pr-previews",
                                                                                     preview.namespace)
        assert binding.role_ref.name == "previews-preview-namespace"
        preview = services.preview_destroy(preview=preview, actor=services.Actor("token", "ci"))
        assert provisioning.teardown(preview.pk, preview.generation) == "terminating"
        watcher.status_of(preview, "deleted", timeout=120)
    finally:
        watcher.watcher.stop()
        kube.reset_clients()


WATCHER = "system:serviceaccount:previews-system:previews-watcher"


@pytest.mark.parametrize("verb,resource,group", [
    ("watch", "pods", ""), ("list", "events", ""), ("watch", "deployments", "apps"),
    ("watch", "replicasets", "apps"), ("watch", "jobs", "batch"), ("watch", "namespaces", "")])
def test_the_watcher_may_list_and_watch_what_it_follows(deployed, kube_api, verb, resource, group):
    assert allowed(kube_api, verb, resource, group, user=WATCHER)


@pytest.mark.parametrize("verb,resource,group", [
    ("create", "namespaces", ""), ("delete", "namespaces", ""), ("patch", "deployments", "apps"),
    ("get", "secrets", ""), ("list", "secrets", ""), ("create", "pods", ""), ("delete", "pods", "")])
def test_the_watcher_can_write_nothing_and_read_no_secret(deployed, kube_api, verb, resource, group):
    assert not allowed(kube_api, verb, resource, group, user=WATCHER)


def test_the_dockerfile_passes_hadolint():
    hadolint = ROOT / ".venv" / "bin" / "hadolint"
    result = subprocess.run([str(hadolint), str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install curl\nUSER root\n")
    result = subprocess.run([str(ROOT / ".venv" / "bin" / "hadolint"), str(bad)], capture_output=True, timeout=60)
    assert result.returncode != 0
