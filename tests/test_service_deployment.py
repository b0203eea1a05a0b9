"""The service's own deployment (deploy/, rendered with `kubectl kustomize`): its pods get the isolation it gives
previews. And the two things the manifests rely on: secrets read from files, and the heartbeat probe."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import yaml

from config.env import Env
from previews import heartbeat
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def rendered() -> list[dict]:
    result = subprocess.run(["kubectl", "kustomize", str(ROOT / "deploy")], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def pod_specs(objects: list[dict]) -> dict[str, dict]:
    return {obj["metadata"]["name"]: obj["spec"]["template"]["spec"] for obj in objects
            if obj["kind"] in ("Deployment", "Job")}


def test_every_pod_is_selected_by_a_network_policy_and_the_namespace_denies_by_default(rendered):
    policies = [obj for obj in rendered if obj["kind"] == "NetworkPolicy"]
    deny = [p for p in policies if p["spec"]["podSelector"] == {} and not p["spec"].get("ingress")
            and not p["spec"].get("egress")]
    assert deny and set(deny[0]["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    for obj in rendered:
        if obj["kind"] in ("Deployment", "Job"):
            assert obj["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"] == "pr-previews"


def test_the_worker_and_the_watcher_have_liveness_and_readiness_probes(rendered):
    for name in ("previews-worker", "previews-watcher", "previews-web"):
        [container] = pod_specs(rendered)[name]["containers"]
        assert container.get("livenessProbe") and container.get("readinessProbe"), name


def test_images_are_pinned_by_digest(rendered):
    for name, spec in pod_specs(rendered).items():
        for container in spec["containers"]:
            assert "@sha256:" in container["image"], name


def test_secrets_are_files_not_environment_variables(rendered):
    for name, spec in pod_specs(rendered).items():
        for container in spec["containers"]:
            assert not any("secretRef" in source for source in container.get("envFrom", [])), name
            assert not any("secretKeyRef" in (env.get("valueFrom") or {}) for env in container.get("env", [])), name
        assert any(v.get("secret", {}).get("secretName") == "previews-secrets" for v in spec["volumes"]), name


def test_no_pod_gets_an_automounted_token_and_the_migrate_job_gets_none_at_all(rendered):
    specs = pod_specs(rendered)
    assert all(spec.get("automountServiceAccountToken") is False for spec in specs.values())
    assert not any("projected" in v for v in specs["previews-migrate"]["volumes"])


def test_every_container_has_a_read_only_root_and_a_writable_tmp(rendered):
    for name, spec in pod_specs(rendered).items():
        for container in spec["containers"]:
            assert container["securityContext"]["readOnlyRootFilesystem"] is True, name
            assert any(m["mountPath"] == "/tmp" for m in container["volumeMounts"]), name
        assert spec["securityContext"]["runAsUser"] >= 10000, name


# --- secrets as files -------------------------------------------------------------------------------------


def test_a_setting_is_read_from_the_secrets_directory_when_its_variable_is_unset(tmp_path):
    (tmp_path / "DJANGO_SECRET_KEY").write_text("from-a-file\n")
    env = Env({"PREVIEWS_SECRETS_DIR": str(tmp_path)})
    assert env.str("DJANGO_SECRET_KEY", "") == "from-a-file"
    assert env.str("GITHUB_TOKEN", "default") == "default"  # no such file: unset


def test_the_variable_wins_over_the_secrets_directory(tmp_path):
    (tmp_path / "DATABASE_URL").write_text("postgres://file@db/x")
    env = Env({"PREVIEWS_SECRETS_DIR": str(tmp_path), "DATABASE_URL": "postgres://env@db/x"})
    assert env.str("DATABASE_URL", "") == "postgres://env@db/x"


def test_no_path_outside_the_secrets_directory_is_read(tmp_path):
    (tmp_path / "inner").mkdir()
    (tmp_path / "secret").write_text("outside")
    env = Env({"PREVIEWS_SECRETS_DIR": str(tmp_path / "inner")})
    assert env.str("../secret", "none") == "none"


# --- the heartbeat probe ----------------------------------------------------------------------------------


def probe(path, max_age: str) -> int:
    return subprocess.run([sys.executable, "-m", "previews.heartbeat", str(path), max_age], cwd=ROOT,
                          capture_output=True, timeout=30).returncode


def test_the_probe_passes_on_a_fresh_heartbeat_and_fails_on_a_stale_or_missing_one(tmp_path):
    path = tmp_path / "heartbeat"
    assert probe(path, "60") == 1  # missing
    heartbeat.touch(str(path))
    assert probe(path, "60") == 0
    old = time.time() - 120
    os.utime(path, (old, old))
    assert probe(path, "60") == 1


def test_a_beat_touches_the_file_only_while_healthy(tmp_path):
    path = tmp_path / "beat"
    healthy = [False]
    heartbeat.beat(str(path), 0.05, lambda: healthy[0])
    time.sleep(0.2)
    assert not path.exists()
    healthy[0] = True
    deadline = time.monotonic() + 5
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert heartbeat.fresh(str(path), 5)


@pytest.mark.django_db
def test_the_watchers_heartbeat_touches_the_probes_file(tmp_path, settings):
    from previews.engine.watcher import Watcher
    from previews.models import WatcherStatus

    settings.PREVIEWS_HEARTBEAT_FILE = str(tmp_path / "heartbeat")
    watcher = Watcher()
    watcher.heartbeat()  # a standby's heartbeat too: written to the database, then the file
    assert WatcherStatus.objects.filter(holder=watcher.holder).exists()
    assert heartbeat.fresh(settings.PREVIEWS_HEARTBEAT_FILE, 5)
