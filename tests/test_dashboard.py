"""The dashboard needs a login and shows live previews."""

import pytest

from tests.factories import make_preview

pytestmark = pytest.mark.django_db


def test_the_dashboard_requires_a_login(client):
    response = client.get("/")
    assert response.status_code == 302
    assert "/login/" in response["Location"]


def test_an_empty_dashboard_says_how_previews_appear(admin_client):
    assert "No live previews" in admin_client.get("/").content.decode()


def test_the_dashboard_lists_live_previews(admin_client):
    make_preview(title="Add a cart", status="ready", url="https://pr-7.preview.example.com")
    page = admin_client.get("/").content.decode()
    assert "Add a cart" in page
    assert "https://pr-7.preview.example.com" in page
