"""/healthz says the process runs; /readyz checks the database and the Kubernetes API."""

import pytest

pytestmark = pytest.mark.django_db


def test_readyz_is_ready_when_database_and_kubernetes_answer(client, kube_env):
    response = client.get("/readyz")
    assert response.status_code == 200, response.json()
    checks = response.json()["checks"]
    assert checks["database"] == "ok"
    assert checks["kubernetes"].startswith("ok (v1.34")


def test_readyz_fails_when_the_kubernetes_api_is_unreachable(client, tmp_path, settings):
    from previews.gateways import kube

    dead = tmp_path / "kubeconfig"
    dead.write_text(
        "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'https://127.0.0.1:9'}}]\n"
        "users: [{name: u, user: {token: t}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\n"
        "current-context: x\n"
    )
    settings.PREVIEWS_KUBECONFIG = str(dead)
    kube.reset_clients()
    try:
        response = client.get("/readyz")
    finally:
        kube.reset_clients()
    assert response.status_code == 503
    assert response.json()["checks"]["kubernetes"].startswith("error:")
    assert response.json()["checks"]["database"] == "ok"
