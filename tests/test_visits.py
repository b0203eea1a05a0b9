"""A preview's URL when its app does not answer there: the pages this service serves for the controller's
fallback (tests/test_real_node.py follows them through the real controller)."""

from __future__ import annotations

import pytest
from django.utils import timezone

from previews import selectors, services, visits
from previews.models import Preview
from tests.factories import make_preview, make_repository


@pytest.mark.parametrize("status,desired,slept,state", [
    (Preview.Status.SLEEPING, Preview.Desired.UP, True, "asleep"),
    (Preview.Status.SLEEPING, Preview.Desired.UP, False, "falling-asleep"),
    (Preview.Status.FAILED, Preview.Desired.UP, False, "failed"),
    (Preview.Status.PENDING, Preview.Desired.UP, False, "starting"),
    (Preview.Status.DEPLOYING, Preview.Desired.UP, False, "starting"),
    (Preview.Status.READY, Preview.Desired.UP, False, "starting"),
    (Preview.Status.DELETING, Preview.Desired.DOWN, False, "gone"),
    (Preview.Status.DELETED, Preview.Desired.DOWN, False, "gone"),
])
def test_which_page_a_preview_host_shows(status, desired, slept, state):
    preview = Preview(status=status, desired=desired, slept_at=timezone.now() if slept else None)
    assert visits.visit_state(preview) == state


def test_a_host_without_a_preview_is_gone():
    assert visits.visit_state(None) == "gone"


@pytest.fixture
def asleep(db):
    selectors._base_domains = (0.0, frozenset())
    repository = make_repository(owner="acme", name="shop", base_domain="preview.example.com")
    return make_preview(repository, pr_number=7, namespace="pr-7", status=Preview.Status.SLEEPING,
                        slept_at=timezone.now(), url="https://pr-7.preview.example.com")


@pytest.mark.parametrize("host", ["pr-7.preview.example.com", "PR-7.Preview.Example.com:8443"])
def test_an_asleep_previews_host_gets_the_asleep_page_whatever_the_case_and_port(client, asleep, host):
    response = client.get("/some/page", HTTP_HOST=host)
    assert response.status_code == 503
    assert response[visits.FALLBACK_HEADER] == "asleep"
    assert response["Retry-After"] == "5"
    page = response.content.decode()
    assert "acme/shop #7 is asleep" in page and f'action="{visits.WAKE_PATH}"' in page
    assert not response.cookies
    assert response["X-Content-Type-Options"] == "nosniff" and response["X-Frame-Options"] == "DENY"


def test_the_asleep_pages_button_wakes_the_preview_as_a_visitor(client, asleep):
    response = client.post(visits.WAKE_PATH, HTTP_HOST="pr-7.preview.example.com")
    assert (response.status_code, response["Location"]) == (303, "/")
    preview = Preview.objects.get(pk=asleep.pk)
    assert preview.status == Preview.Status.PENDING and preview.generation == asleep.generation + 1
    assert preview.events.filter(action="wake requested", actor_kind="visitor").exists()


def test_a_wake_of_a_preview_that_is_awake_changes_nothing(client, asleep):
    services.preview_wake(preview=asleep, actor=services.Actor("user", "ann"))
    generation = Preview.objects.get(pk=asleep.pk).generation
    assert client.post(visits.WAKE_PATH, HTTP_HOST="pr-7.preview.example.com").status_code == 303
    assert Preview.objects.get(pk=asleep.pk).generation == generation


def test_a_preview_host_without_a_preview_is_404_and_other_methods_are_405(client, asleep):
    response = client.get("/", HTTP_HOST="pr-8.preview.example.com")
    assert (response.status_code, response[visits.FALLBACK_HEADER]) == (404, "gone")
    assert "There is no preview at <code>pr-8</code>" in response.content.decode()
    assert client.put("/", HTTP_HOST="pr-7.preview.example.com").status_code == 405


@pytest.mark.parametrize("host", ["localhost:8000", "preview.example.com", "pr-7.other.example.com",
                                  "pr_7.preview.example.com", "pr-7.preview.example.com:http", ""])
def test_other_hosts_go_on_to_the_service(client, asleep, host):
    response = client.get("/healthz", HTTP_HOST=host)
    assert visits.FALLBACK_HEADER not in response
