"""Preview data through the engine: deploy, migrate Job, reset, teardown, in-namespace (real Postgres and
the real local control plane; the watcher runs in the test's thread)."""

from __future__ import annotations

import base64

import psycopg
import pytest
from django.core.exceptions import ValidationError
from kubernetes import client

from previews import data as preview_data
from previews import manifests, provisioning, services
from previews.gateways import preview_db
from previews.models import Preview
from tests.data_server import TEMPLATE_ROWS
from tests.test_provisioning import CI, deploy, upsert

pytestmark = pytest.mark.kube


def secret_env(kube_api, namespace: str) -> dict[str, str]:
    secret = client.CoreV1Api(kube_api).read_namespaced_secret(preview_data.SECRET_NAME, namespace)
    return {k: base64.b64decode(v).decode() for k, v in secret.data.items()}


@pytest.fixture
def schema_repo(preview_repo, data_settings):
    preview_repo.data_mode = "schema"
    preview_repo.save()
    return preview_repo


@pytest.fixture
def database_repo(preview_repo, data_settings):
    preview_repo.data_mode = "database"
    preview_repo.data_template = data_settings.template
    preview_repo.data_migrate_command = "python manage.py migrate"
    preview_repo.save()
    return preview_repo


@pytest.fixture
def cleanup_data():
    """Drop whatever data the test's previews still have, even when the test failed halfway."""
    previews: list[Preview] = []
    yield previews.append
    for preview in previews:
        preview.refresh_from_db()
        if preview.data_name:
            preview_data.drop(preview)


def test_a_schema_preview_gets_its_secret_with_a_working_url_and_becomes_ready(
        schema_repo, kube_api, watcher, cleanup_data, data_settings):
    preview = upsert(schema_repo)
    cleanup_data(preview)
    assert deploy(preview) == "applied"
    watcher.status_of(preview, "ready")
    assert preview.data_mode == "schema" and preview.data_name.endswith("_pr7")
    assert preview.events.filter(action="data created").exists()

    env = secret_env(kube_api, preview.namespace)
    assert set(env) == {"DATABASE_URL", "PGHOST", "PGPORT", "PGDATABASE", "PGUSER", "PGPASSWORD"}
    assert env["PGUSER"] == preview.data_name
    with psycopg.connect(env["DATABASE_URL"], autocommit=True) as conn:
        conn.execute("CREATE TABLE orders (id int)")
        conn.execute("INSERT INTO orders VALUES (1)")
        assert conn.execute("SELECT current_schema()").fetchone() == (preview.data_name,)
    # The password is derived, never stored: no column holds it, and the server keeps only a verifier.
    assert env["PGPASSWORD"] == preview_data.password_for(preview)
    row = Preview.objects.filter(pk=preview.pk).values().get()
    assert not any(env["PGPASSWORD"] in str(v) for v in row.values())
    assert not any(env["PGPASSWORD"] in str(e.message) + str(e.details) for e in preview.events.all())

    # The NetworkPolicy lets the pods reach the data server's port, and nothing else new.
    policy = client.NetworkingV1Api(kube_api).read_namespaced_network_policy("preview-isolation", preview.namespace)
    egress = policy.to_dict()["spec"]["egress"][-1]
    assert egress["to"][0]["ip_block"]["cidr"] == "127.0.0.1/32"
    assert egress["ports"] == [{"end_port": None, "port": int(data_settings.port), "protocol": "TCP"}]

    # A second deploy (a push) keeps the same data and password.
    again = upsert(schema_repo, sha="2" * 40, image="localhost/previews-sample:pr-7-2222222")
    assert deploy(again) == "applied"
    assert secret_env(kube_api, preview.namespace)["PGPASSWORD"] == env["PGPASSWORD"]
    with psycopg.connect(env["DATABASE_URL"], autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM orders").fetchone() == (1,)


def test_a_database_preview_waits_for_its_migrate_job_and_reset_brings_the_template_back(
        database_repo, kube_api, watcher, cleanup_data):
    preview = upsert(database_repo)
    cleanup_data(preview)
    assert deploy(preview) == "applied"
    preview.refresh_from_db()
    job = f"Job/preview-migrate-{preview.generation}"
    assert job in preview.rollout  # readiness waits for the migrations
    watcher.status_of(preview, "ready")
    batch = client.BatchV1Api(kube_api).read_namespaced_job(job.split("/")[1], preview.namespace)
    container = batch.spec.template.spec.containers[0]
    assert container.image == "localhost/previews-sample:pr-7-1111111"  # the PR's image
    assert container.command == ["/bin/sh", "-c", "python manage.py migrate"]
    assert container.env_from[0].secret_ref.name == "preview-database"
    assert preview.data_size_bytes > 1_000_000

    url = secret_env(kube_api, preview.namespace)["DATABASE_URL"]
    with psycopg.connect(url, autocommit=True) as conn:
        assert [r for (r,) in conn.execute("SELECT name FROM items ORDER BY id")] == list(TEMPLATE_ROWS)
        conn.execute("INSERT INTO items (name) VALUES ('durian')")

    preview = services.preview_reset_data(preview=preview, actor=CI)
    assert preview.events.filter(action="data reset requested").exists()
    assert deploy(preview) == "applied"
    preview.refresh_from_db()
    assert f"Job/preview-migrate-{preview.generation}" in preview.rollout  # migrations run again
    watcher.status_of(preview, "ready")
    assert preview.data_reset_at is not None
    assert preview.events.filter(action="data reset").exists()
    with psycopg.connect(url, autocommit=True) as conn:
        assert [r for (r,) in conn.execute("SELECT name FROM items ORDER BY id")] == list(TEMPLATE_ROWS)
    # The previous generation's Job was pruned.
    jobs = client.BatchV1Api(kube_api).list_namespaced_job(preview.namespace).items
    assert [j.metadata.name for j in jobs if j.metadata.deletion_timestamp is None] == [
        f"preview-migrate-{preview.generation}"]


def test_a_failing_migrate_job_fails_the_preview_with_its_pods_reason(
        database_repo, kube_api, watcher, cleanup_data, monkeypatch, settings):
    settings.PREVIEWS_ROLLOUT_TIMEOUT = 600
    real = preview_data.migrate_job

    def unpullable(*args, **kwargs):
        job = real(*args, **kwargs)
        # kwok plays a kubelet that cannot pull the image for pods with this label.
        job["spec"]["template"]["metadata"]["labels"]["previews.local/simulate"] = "image-pull-backoff"
        return job

    monkeypatch.setattr(preview_data, "migrate_job", unpullable)
    preview = upsert(database_repo)
    cleanup_data(preview)
    deploy(preview)
    watcher.watcher.fail_fast = 2
    watcher.status_of(preview, "failed")
    assert f"Job preview-migrate-{preview.generation}: not complete" in preview.status_message
    assert "container migrate is ImagePullBackOff" in preview.status_message


def test_the_teardown_drops_the_previews_data(schema_repo, kube_api, watcher, data_settings):
    preview = upsert(schema_repo)
    deploy(preview)
    preview.refresh_from_db()
    name = preview.data_name
    held = data_settings.connect(data_settings.shared, user=name)  # a session still connected
    preview = services.preview_destroy(preview=preview, actor=CI, reason="PR closed")
    assert provisioning.teardown(preview.pk, preview.generation) in ("terminating", "deleted")
    preview.refresh_from_db()
    assert preview.data_name == "" and preview.data_mode == ""
    event = preview.events.get(action="data dropped")
    assert event.details["steps"][-1] == f"role {name} dropped"
    assert not [o for o in preview_db.list_marked() if o.name == name]
    held.close()


def test_data_that_cannot_be_prepared_fails_the_deploy_before_anything_is_applied(
        database_repo, kube_api, cleanup_data, data_settings):
    database_repo.data_template = f"{data_settings.prefix}_missing"
    database_repo.save()
    preview = upsert(database_repo)
    cleanup_data(preview)
    assert deploy(preview) == "failed"
    preview.refresh_from_db()
    assert "could not be prepared" in preview.status_message and "does not exist" in preview.status_message
    with pytest.raises(client.ApiException):
        client.CoreV1Api(kube_api).read_namespace(preview.namespace)


DATABASE_SECRET = "\n---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: preview-database\n"


def test_manifests_that_define_the_preview_database_secret_are_refused_when_they_arrive(schema_repo):
    with pytest.raises(ValidationError, match="'preview-database' is reserved"):
        upsert(schema_repo, manifests=schema_repo.manifest_template + DATABASE_SECRET)
    assert not Preview.objects.filter(repository=schema_repo).exists()


def test_a_template_that_defines_the_preview_database_secret_fails_the_deploy(schema_repo, cleanup_data):
    schema_repo.manifest_template += DATABASE_SECRET
    schema_repo.save()
    preview = upsert(schema_repo)
    cleanup_data(preview)
    assert deploy(preview) == "failed"
    preview.refresh_from_db()
    assert "'preview-database' is reserved" in preview.status_message


def test_reset_is_refused_without_data_or_while_deleting(preview_repo):
    preview = upsert(preview_repo)
    with pytest.raises(services.PreviewConflict, match="data mode none"):
        services.preview_reset_data(preview=preview, actor=CI)


def test_a_template_name_over_63_bytes_is_refused_by_the_model(preview_repo):
    preview_repo.data_mode = "database"
    preview_repo.data_template = "t" * 64
    with pytest.raises(ValidationError, match="data_template"):
        preview_repo.full_clean()


# --- in-namespace ---------------------------------------------------------------------------------


def test_in_namespace_objects_pass_the_policy_and_apply_on_the_control_plane(preview_repo, kube_api, watcher):
    preview_repo.data_mode = "in-namespace"
    preview_repo.data_storage = "2Gi"
    preview_repo.data_migrate_command = "psql -f /seed.sql"
    preview_repo.save()
    preview = upsert(preview_repo)
    ctx = provisioning.render_context(preview)
    rendered = preview_data.in_namespace_objects(ctx, "postgres:15", "2Gi")
    assert manifests.validate(rendered, ctx) == []

    assert deploy(preview) == "applied"
    preview.refresh_from_db()
    assert set(preview.rollout) == {"Deployment/web", "StatefulSet/preview-postgres",
                                    f"Job/preview-migrate-{preview.generation}"}
    apps, core = client.AppsV1Api(kube_api), client.CoreV1Api(kube_api)
    sts = apps.read_namespaced_stateful_set("preview-postgres", preview.namespace)
    assert sts.spec.volume_claim_templates[0].spec.resources.requests == {"storage": "2Gi"}
    assert core.read_namespaced_service("preview-postgres", preview.namespace).spec.type == "ClusterIP"
    env = secret_env(kube_api, preview.namespace)
    assert env["DATABASE_URL"].endswith(f"@preview-postgres.{preview.namespace}.svc:5432/app")
    assert env["POSTGRES_PASSWORD"] == env["PGPASSWORD"] == preview_data.password_for(preview)
    # Pods cannot run here: readiness is whatever kwok reports (a volume nobody provisions keeps the
    # StatefulSet's pod unscheduled on this control plane). Let the watcher look once, and say what it saw.
    watcher.until(lambda: True, timeout=1)
