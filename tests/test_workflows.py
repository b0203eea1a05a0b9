"""The GitHub Actions workflows lint clean, and their scripts work against the real service."""

import os
import subprocess

import pytest

from previews import services
from previews.models import Preview
from tests.conftest import ROOT, wait_until

WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))


@pytest.fixture(scope="module")
def actionlint() -> str:
    result = subprocess.run([str(ROOT / "scripts" / "tools"), "actionlint"], capture_output=True, text=True,
                            timeout=600, check=True)
    return result.stdout.strip()


def test_both_workflows_exist():
    assert [w.name for w in WORKFLOWS] == ["pr-cleanup.yml", "pr-preview.yml"]


def test_the_workflows_pass_actionlint(actionlint):
    result = subprocess.run([actionlint, *map(str, WORKFLOWS)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_catches_a_broken_workflow(actionlint, tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text("on: pull_request\njobs:\n  x:\n    runs-on: ubuntu-latest\n    steps:\n"
                      "      - run: echo ${{ github.event.pull_request.title }}\n        uses: nope\n")
    assert subprocess.run([actionlint, str(broken)], capture_output=True, timeout=60).returncode != 0


def _ci_env(live_server, token: str, **extra) -> dict:
    return {**os.environ, "PREVIEWS_URL": live_server.url, "PREVIEWS_TOKEN": token,
            "GITHUB_REPOSITORY": "acme/shop", **extra}


@pytest.mark.kube
@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_the_ci_scripts_deploy_wait_for_ready_and_delete(live_server, preview_repo, engine, kube_api, tmp_path):
    preview_repo.owner, preview_repo.name = "acme", "shop"
    preview_repo.save()
    token = services.token_create(name="gha", repository=preview_repo)[1]
    summary = tmp_path / "summary.md"
    env = _ci_env(live_server, token, PR_NUMBER="21", HEAD_SHA="d" * 40,
                  IMAGE="localhost/previews-sample:pr-21-ddddddd", PR_TITLE="Checkout page", PR_AUTHOR="octocat",
                  GITHUB_STEP_SUMMARY=str(summary), PREVIEW_WAIT_SECONDS="120")
    deploy = subprocess.run([str(ROOT / "scripts" / "ci" / "preview-deploy")], env=env, capture_output=True,
                            text=True, timeout=180)
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr
    url = f"https://{preview_repo.namespace_prefix}-21.preview.example.com"
    assert f"Preview ready: {url}" in deploy.stdout
    assert url in summary.read_text()
    assert Preview.objects.get(pr_number=21).title == "Checkout page"

    delete = subprocess.run([str(ROOT / "scripts" / "ci" / "preview-delete")], env=env, capture_output=True,
                            text=True, timeout=60)
    assert delete.returncode == 0, delete.stdout + delete.stderr
    assert "is being deleted" in delete.stdout
    wait_until(lambda: Preview.objects.get(pr_number=21).status == "deleted", timeout=90, message="teardown")


@pytest.mark.django_db(transaction=True)
def test_the_deploy_script_fails_the_job_when_the_service_refuses(live_server, preview_repo):
    token = services.token_create(name="gha", repository=preview_repo)[1]
    env = _ci_env(live_server, token, GITHUB_REPOSITORY=preview_repo.full_name, PR_NUMBER="3", HEAD_SHA="not-a-sha",
                  IMAGE="localhost/previews-sample:pr-3")
    result = subprocess.run([str(ROOT / "scripts" / "ci" / "preview-deploy")], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode != 0
    assert "not a commit SHA" in result.stdout


@pytest.mark.django_db(transaction=True)
def test_the_delete_script_accepts_a_pr_without_a_preview(live_server, preview_repo):
    token = services.token_create(name="gha", repository=preview_repo)[1]
    env = _ci_env(live_server, token, GITHUB_REPOSITORY=preview_repo.full_name, PR_NUMBER="999")
    result = subprocess.run([str(ROOT / "scripts" / "ci" / "preview-delete")], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "has no preview" in result.stdout


@pytest.fixture
def oidc_issuer(settings):
    from previews import oidc
    from tests.oidc_issuer import AUDIENCE, TestIssuer

    with TestIssuer() as issuer:
        settings.PREVIEWS_OIDC_ISSUER = issuer.url
        settings.PREVIEWS_OIDC_JWKS_URL = ""
        settings.PREVIEWS_OIDC_AUDIENCE = AUDIENCE
        oidc.reset_cache()
        yield issuer
        oidc.reset_cache()


def _oidc_env(live_server, issuer, **extra) -> dict:
    from tests.oidc_issuer import AUDIENCE, REQUEST_TOKEN

    env = {**os.environ, "PREVIEWS_URL": live_server.url, "PREVIEWS_AUDIENCE": AUDIENCE,
           "GITHUB_REPOSITORY": "acme/shop", "ACTIONS_ID_TOKEN_REQUEST_URL": f"{issuer.url}/token?api-version=2.0",
           "ACTIONS_ID_TOKEN_REQUEST_TOKEN": REQUEST_TOKEN, **extra}
    env.pop("PREVIEWS_TOKEN", None)
    return env


@pytest.mark.kube
@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_the_ci_scripts_deploy_and_delete_with_a_github_actions_oidc_token(live_server, preview_repo, engine,
                                                                           oidc_issuer):
    preview_repo.owner, preview_repo.name = "acme", "shop"
    preview_repo.github_repository_id, preview_repo.github_owner_id = 100, 200
    preview_repo.save()
    sha = "e" * 40
    # PR 22's branch is in the repository, as its pull_request webhook told (a private repository's token: the
    # service must know the PR is not a fork's).
    services.pull_request_record(repository=preview_repo, pr_number=22, state="open", draft=False, labels=[],
                                 head_sha=sha, head_repository="acme/shop", author_association="MEMBER")
    oidc_issuer.job_claims = {"ref": "refs/pull/22/merge", "sha": sha, "run_id": "4242"}
    env = _oidc_env(live_server, oidc_issuer, PR_NUMBER="22", HEAD_SHA=sha,
                    IMAGE="localhost/previews-sample:pr-22-eeeeeee", PREVIEW_WAIT_SECONDS="120")
    deploy = subprocess.run([str(ROOT / "scripts" / "ci" / "preview-deploy")], env=env, capture_output=True,
                            text=True, timeout=180)
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr
    assert f"Preview ready: https://{preview_repo.namespace_prefix}-22.preview.example.com" in deploy.stdout
    preview = Preview.objects.get(pr_number=22)
    created = preview.events.get(action="created")
    assert (created.actor_kind, created.details["actor_url"]) == (
        "workflow", "https://github.com/acme/shop/actions/runs/4242/attempts/1")
    assert oidc_issuer.count("/token") >= 2  # a fresh token for the deploy and for each read

    delete = subprocess.run([str(ROOT / "scripts" / "ci" / "preview-delete")], env=env, capture_output=True,
                            text=True, timeout=60)
    assert delete.returncode == 0, delete.stdout + delete.stderr
    assert "is being deleted" in delete.stdout
    # The teardown itself is the engine's business (tested with static tokens above); here: who asked.
    assert Preview.objects.get(pr_number=22).desired == "down"
    assert preview.events.filter(action="destroy requested", actor_kind="workflow").exists()


@pytest.mark.django_db(transaction=True)
def test_the_deploy_script_reports_a_refused_oidc_token(live_server, preview_repo, oidc_issuer):
    # The repository has no GitHub ids: the service names the claim, the job fails with it.
    oidc_issuer.job_claims = {"repository": preview_repo.full_name, "ref": "refs/pull/3/merge", "sha": "a" * 40}
    env = _oidc_env(live_server, oidc_issuer, GITHUB_REPOSITORY=preview_repo.full_name, PR_NUMBER="3",
                    HEAD_SHA="a" * 40, IMAGE="localhost/previews-sample:pr-3")
    result = subprocess.run([str(ROOT / "scripts" / "ci" / "preview-deploy")], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode != 0
    assert "token.repository_id" in result.stdout


def test_the_deploy_script_explains_a_missing_id_token_permission(tmp_path):
    env = {**os.environ, "PREVIEWS_URL": "http://127.0.0.1:9", "GITHUB_REPOSITORY": "acme/shop", "PR_NUMBER": "1",
           "HEAD_SHA": "a" * 40, "IMAGE": "x"}
    for name in ("PREVIEWS_TOKEN", "ACTIONS_ID_TOKEN_REQUEST_URL", "ACTIONS_ID_TOKEN_REQUEST_TOKEN"):
        env.pop(name, None)
    result = subprocess.run([str(ROOT / "scripts" / "ci" / "preview-deploy")], env=env, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode != 0
    assert "id-token: write" in result.stderr
