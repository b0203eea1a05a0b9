"""Reset data and the data's description through the API, the dashboard and the PR comment."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client

from previews import notifications, services
from previews.models import Preview
from tests.factories import make_preview, make_repository

pytestmark = pytest.mark.django_db
PATH = "/api/v1/repos/acme/shop/previews/7"


def post(client: Client, path: str):
    """As `curl -X POST` sends it: no body, no content type."""
    return client.generic("POST", path)


@pytest.fixture
def preview():
    repository = make_repository(owner="acme", name="shop", data_mode="database", data_template="shop_template")
    return make_preview(repository, pr_number=7, namespace="pr-7", status="ready", data_mode="database",
                        data_name="pv1_acme_shop_pr7", data_size_bytes=123_456_789,
                        data_reset_at=datetime(2026, 2, 1, 9, 30, tzinfo=UTC),
                        url="https://pr-7.preview.example.com")


@pytest.fixture
def api(preview):
    return Client(HTTP_AUTHORIZATION=f"Bearer {services.token_create(name='ci', repository=preview.repository)[1]}")


def test_the_api_shows_the_data_mode_name_size_and_last_reset(api, preview):
    body = api.get(PATH).json()
    assert body["data"] == {"mode": "database", "database": "pv1_acme_shop_pr7", "size_bytes": 123_456_789,
                            "size_measured_at": None, "last_reset_at": "2026-02-01T09:30:00Z"}
    assert body["links"]["reset_data"] == f"{PATH}/reset-data"


def test_post_reset_data_queues_a_reset_deploy_and_records_who_asked(api, preview):
    response = post(api, f"{PATH}/reset-data")
    assert response.status_code == 202, response.content
    preview.refresh_from_db()
    assert preview.status == "pending" and preview.data_reset_generation == preview.generation
    event = preview.events.get(action="data reset requested")
    assert (event.actor_kind, event.actor) == ("token", "ci")
    assert preview.deploy_queued_at is not None  # its deploy holds a slot: queued after commit


def test_reset_data_is_409_without_a_data_mode_or_while_deleting(api, preview):
    preview.repository.data_mode, preview.repository.data_template = "none", ""
    preview.repository.save()
    response = post(api, f"{PATH}/reset-data")
    assert response.status_code == 409 and "data mode none" in response.json()["detail"]
    preview.repository.data_mode, preview.repository.data_template = "database", "t"
    preview.repository.save()
    Preview.objects.filter(pk=preview.pk).update(desired="down", status="deleting")
    assert post(api, f"{PATH}/reset-data").status_code == 409


def test_reset_data_needs_a_token_of_the_repository(preview):
    other = make_repository(owner="acme", name="other")
    client = Client(HTTP_AUTHORIZATION=f"Bearer {services.token_create(name='x', repository=other)[1]}")
    assert post(client, f"{PATH}/reset-data").status_code == 403
    assert post(Client(), f"{PATH}/reset-data").status_code == 401


def login(group: str) -> Client:
    user = User.objects.create_user(username="ann", password="pw")
    user.groups.add(Group.objects.get(name=group))
    client = Client()
    client.force_login(user)
    return client


def test_the_dashboard_shows_the_data_and_offers_reset_to_operators(preview):
    html = login("Preview operators").get(f"/previews/{preview.pk}/").content.decode()
    assert "pv1_acme_shop_pr7" in html and "117.7\xa0MB" in html and "last reset 2026-02-01 09:30 UTC" in html
    assert 'id="reset-data-form"' in html


def test_the_reset_action_has_its_own_permission(preview):
    viewer = login("Preview viewers")
    assert 'id="reset-data-form"' not in viewer.get(f"/previews/{preview.pk}/").content.decode()
    assert viewer.post(f"/previews/{preview.pk}/reset-data").status_code == 403
    assert not preview.events.exists()
    User.objects.all().delete()
    operator = login("Preview operators")
    assert operator.post(f"/previews/{preview.pk}/reset-data").status_code == 302
    assert preview.events.get(action="data reset requested").actor == "ann"


def test_the_pr_comment_names_the_data_and_how_to_reset_it(preview):
    body = notifications.comment_body(preview, datetime(2026, 2, 2, tzinfo=UTC))
    assert "| Data | database `pv1_acme_shop_pr7`, last reset 2026-02-01 09:30 UTC |" in body
    assert f"`POST {PATH}/reset-data`" in body
    before = notifications.sync_key(preview)
    preview.data_reset_at = datetime(2026, 2, 3, tzinfo=UTC)
    assert notifications.sync_key(preview) != before  # a reset is news for the PR
