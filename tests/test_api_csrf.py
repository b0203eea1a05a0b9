"""Every /api/ answer is problem+json, CSRF refusals and unmatched paths included (the API is token-authenticated;
Django's HTML CSRF page belongs to the dashboard)."""

import json

import pytest
from django.test import Client, RequestFactory

from previews.api import errors

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("path", [
    "/api/v1/repos/demo/..%2Fshop/previews/1",
    "/api/v1/repos/demo/a%2Fb/previews/1",
    "/api/v1/no-such-endpoint",
])
@pytest.mark.parametrize("method", ["put", "post", "delete", "patch"])
def test_an_unmatched_api_path_is_a_problem_not_a_csrf_page(path, method):
    response = getattr(Client(enforce_csrf_checks=True), method)(path, data="{}", content_type="application/json",
                                                                  HTTP_AUTHORIZATION="Bearer pvt_x")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["status"] == 404


def test_a_csrf_refusal_under_api_is_problem_json():
    request = RequestFactory().put("/api/v1/anything")
    response = errors.csrf_failure(request, reason="CSRF cookie not set.")
    assert response.status_code == 403 and response["Content-Type"] == "application/problem+json"
    assert "Authorization header" in json.loads(response.content)["detail"]


def test_a_csrf_refusal_elsewhere_keeps_djangos_page():
    response = errors.csrf_failure(RequestFactory().post("/dashboard/x"), reason="CSRF cookie not set.")
    assert response.status_code == 403 and response["Content-Type"].startswith("text/html")


def test_the_setting_names_the_api_aware_view(settings):
    assert settings.CSRF_FAILURE_VIEW == "previews.api.errors.csrf_failure"
