"""Django admin: repositories and tokens; a new token's plaintext is shown once."""

import re

import pytest
from django.contrib.messages import get_messages

from previews import services
from previews.models import ApiToken
from tests.factories import make_repository

pytestmark = pytest.mark.django_db


def test_creating_a_token_in_the_admin_shows_its_plaintext_once(admin_client):
    repository = make_repository()
    response = admin_client.post(
        "/admin/previews/apitoken/add/", {"name": "github-actions", "repository": repository.pk}
    )
    assert response.status_code == 200  # shown in this response, not after a redirect
    match = re.search(r"(pvw_[0-9a-f]{8}_[A-Za-z0-9_-]+)", response.content.decode())
    assert match, "the plaintext token should be shown after creation"
    plaintext = match.group(1)
    assert "no-store" in response["Cache-Control"]
    # It never travels in a cookie (the messages cookie) nor in a message kept in the session.
    assert all(plaintext not in morsel.value for morsel in response.cookies.values())
    assert not [str(m) for m in get_messages(response.wsgi_request)]
    assert plaintext not in admin_client.get("/admin/previews/apitoken/").content.decode()
    token = ApiToken.objects.get(name="github-actions")
    assert services.token_authenticate(plaintext).pk == token.pk
    change_page = admin_client.get(f"/admin/previews/apitoken/{token.pk}/change/").content.decode()
    assert plaintext not in change_page


def test_the_admin_lists_repositories(admin_client):
    make_repository(owner="acme", name="storefront")
    assert "acme/storefront" in admin_client.get("/admin/previews/repository/").content.decode()


def _repository_form(**overrides) -> dict:
    return {"owner": "acme", "name": "shop", "base_domain": "preview.example.com", "namespace_prefix": "pr",
            "manifest_template": "", "image_name": "", "image_template": "", "service_name": "web",
            "service_port": 80, "tls_secret_name": "", "default_ttl_hours": 72, "max_ttl_hours": 336,
            "max_live_previews": 20, "quota_cpu": "2", "quota_memory": "4Gi", "quota_pods": 20,
            "github_repository_id": "", "github_owner_id": "", "oidc_workflow_refs": "", "oidc_environment": "",
            **overrides}


def test_saving_a_repository_fills_its_github_ids_for_oidc_from_github(admin_client, fake_github):
    from previews.models import Repository

    fake_github.add_repo("acme/shop")
    response = admin_client.post("/admin/previews/repository/add/", _repository_form(), follow=True)
    assert response.status_code == 200
    repository = Repository.objects.get(owner="acme", name="shop")
    assert (repository.github_repository_id, repository.github_owner_id) == fake_github.repo_ids("acme/shop")


def test_a_repository_unknown_to_github_is_saved_without_ids_and_a_warning(admin_client, fake_github):
    from previews.models import Repository

    response = admin_client.post("/admin/previews/repository/add/", _repository_form(name="gone"), follow=True)
    assert response.status_code == 200
    assert Repository.objects.get(name="gone").github_repository_id is None
    assert "GitHub ids not filled in" in " ".join(str(m) for m in get_messages(response.wsgi_request))
