"""The dashboard: login, permissions, CSRF, forms, and a constant number of queries."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client
from django.utils import timezone

from previews.models import Preview
from tests.factories import make_preview, make_repository

pytestmark = pytest.mark.django_db
ACTIONS = [("extend", "previews.extend_preview", {"choice": "24", "reason": "QA"}),
           ("pin", "previews.pin_preview", {"pinned": "true"}),
           ("redeploy", "previews.redeploy_preview", {}),
           ("kill", "previews.kill_preview", {"confirm": "pr-7"})]


def login(group: str | None = "Preview operators", **kw) -> Client:
    user = User.objects.create_user(username=kw.get("username", "ann"), password="pw")
    if group:
        user.groups.add(Group.objects.get(name=group))
    client = Client(**kw.get("client_kwargs", {}))
    client.force_login(user)
    return client


@pytest.fixture
def preview():
    repository = make_repository(owner="acme", name="shop", max_ttl_hours=100)
    return make_preview(repository, pr_number=7, namespace="pr-7", status="ready", title="Add a cart",
                        author="mona", url="https://pr-7.preview.example.com")


def test_the_list_requires_a_login(client):
    response = client.get("/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_a_user_without_the_view_permission_gets_403(preview):
    assert login(group=None).get("/").status_code == 403
    assert login(group=None, username="bob").get(f"/previews/{preview.pk}/").status_code == 403


def test_a_viewer_sees_the_list_with_links_and_counts(preview):
    page = login("Preview viewers").get("/").content.decode()
    assert "acme/shop #7" in page and "Add a cart" in page
    assert 'href="https://github.com/acme/shop/pull/7"' in page
    assert 'href="https://github.com/mona"' in page
    assert 'href="https://pr-7.preview.example.com"' in page
    assert 'data-status="ready"' in page and ">Ready<" in page.replace("</span>", "<")
    assert '<strong data-count="live">1</strong>' in page


def test_an_empty_list_says_how_previews_appear():
    assert "No live previews" in login().get("/").content.decode()


def test_the_list_filters_by_repository_status_author_and_search():
    repo, other = make_repository(owner="acme", name="shop"), make_repository(owner="acme", name="api")
    make_preview(repo, pr_number=1, status="ready", author="mona", title="Cart")
    make_preview(repo, pr_number=2, status="failed", author="lee", title="Checkout")
    make_preview(other, pr_number=3, status="ready", author="mona", title="Search")
    make_preview(other, pr_number=4, status="deleted", title="Gone")
    client = login()

    def shown(query: str) -> set[int]:
        html = client.get(f"/?{query}").content.decode()
        return {n for n in (1, 2, 3, 4) if f"#{n}</a>" in html}

    assert shown("") == {1, 2, 3}
    assert shown("repository=acme/shop") == {1, 2}
    assert shown("status=failed") == {2}
    assert shown("author=mona") == {1, 3}
    assert shown("q=checkout") == {2}
    assert shown("q=%233") == {3}


def test_htmx_refresh_returns_only_the_rows(preview):
    response = login().get("/", HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert html.lstrip().startswith('<div id="rows"') and "<html" not in html


def test_the_list_of_500_previews_uses_a_constant_number_of_queries(django_assert_max_num_queries):
    repos = [make_repository(owner="acme", name=f"svc{i}") for i in range(5)]
    now = timezone.now()
    Preview.objects.bulk_create([
        Preview(repository=repos[i % 5], pr_number=i + 1, namespace=f"pr-{i + 1}-{i % 5}", head_sha="a" * 40,
                status="ready", expires_at=now + timedelta(hours=i % 48 + 1), title=f"PR {i}", author="mona")
        for i in range(500)])
    client = login()
    with django_assert_max_num_queries(12):
        response = client.get("/?page=3")
    assert response.status_code == 200 and "Page 3 of 10" in response.content.decode()
    with django_assert_max_num_queries(12):
        client.get("/", HTTP_HX_REQUEST="true")


def test_the_detail_page_shows_status_url_and_timeline(preview):
    preview.events.create(actor_kind="token", actor="ci", action="created", message="Preview requested")
    html = login().get(f"/previews/{preview.pk}/").content.decode()
    assert "https://pr-7.preview.example.com" in html and 'data-action="created"' in html
    assert "Preview requested" in html



def test_the_timeline_links_a_workflow_actor_to_its_run(preview):
    run = "https://github.com/acme/shop/actions/runs/9001/attempts/1"
    preview.events.create(actor_kind="workflow", actor="acme/shop PR preview run 9001/1", action="created",
                          details={"actor_url": run})
    html = login().get(f"/previews/{preview.pk}/").content.decode()
    assert f'<a href="{run}" rel="noopener">acme/shop PR preview run 9001/1</a>' in html

@pytest.mark.parametrize("action,permission,data", ACTIONS, ids=[a[0] for a in ACTIONS])
def test_each_action_without_its_permission_is_403(preview, action, permission, data):
    client = login("Preview viewers")
    response = client.post(f"/previews/{preview.pk}/{action}", data)
    assert response.status_code == 403
    assert preview.events.count() == 0


@pytest.mark.parametrize("action,permission,data", ACTIONS, ids=[a[0] for a in ACTIONS])
def test_each_action_without_csrf_is_403(preview, action, permission, data):
    client = login(client_kwargs={"enforce_csrf_checks": True})
    assert client.post(f"/previews/{preview.pk}/{action}", data).status_code == 403
    assert preview.events.count() == 0


@pytest.mark.parametrize("action", [a[0] for a in ACTIONS])
def test_get_on_an_action_is_405(preview, action):
    assert login().get(f"/previews/{preview.pk}/{action}").status_code == 405


def test_extend_by_24_hours_writes_one_event_with_the_user(preview):
    before = preview.expires_at
    response = login().post(f"/previews/{preview.pk}/extend", {"choice": "24", "reason": "QA on Friday"})
    assert response.status_code == 302
    preview.refresh_from_db()
    assert preview.expires_at == before + timedelta(hours=24)
    [event] = preview.events.all()
    assert (event.action, event.actor_kind, event.actor, event.message) == ("extended", "user", "ann", "QA on Friday")


@pytest.mark.parametrize("data,error", [
    ({"choice": "custom", "hours": "-5", "reason": "x"}, "Hours must be at least 1."),
    ({"choice": "custom", "hours": "", "reason": "x"}, "Give the number of hours."),
    ({"choice": "custom", "hours": "500", "reason": "x"}, "maximum of 100 hours"),
    ({"choice": "custom", "hours": "1000000000000", "reason": "x"}, "Hours must be at most 8784."),
    ({"choice": "custom", "hours": "1" + "0" * 30, "reason": "x"}, "Hours must be at most 8784."),
    ({"choice": "custom", "hours": "1e12", "reason": "x"}, "Enter a whole number."),
    ({"choice": "24", "reason": ""}, "Say why the preview is needed for longer."),
    ({"choice": "forever", "reason": "x"}, "Select a valid choice"),
])
def test_an_invalid_extend_shows_the_error_and_changes_nothing(preview, data, error):
    before = preview.expires_at
    response = login().post(f"/previews/{preview.pk}/extend", data)
    assert response.status_code == 422
    assert error in response.content.decode()
    preview.refresh_from_db()
    assert preview.expires_at == before and preview.events.count() == 0


def test_pin_and_unpin(preview):
    client = login()
    client.post(f"/previews/{preview.pk}/pin", {"pinned": "true"})
    assert Preview.objects.get(pk=preview.pk).pinned
    client.post(f"/previews/{preview.pk}/pin", {"pinned": "false"})
    assert not Preview.objects.get(pk=preview.pk).pinned
    assert [e.action for e in preview.events.order_by("id")] == ["pinned", "unpinned"]


def test_redeploy_bumps_the_generation(preview):
    login().post(f"/previews/{preview.pk}/redeploy")
    preview.refresh_from_db()
    assert preview.generation == 2 and preview.status == "pending"


def test_kill_needs_the_namespace_typed_exactly(preview):
    client = login()
    response = client.post(f"/previews/{preview.pk}/kill", {"confirm": "pr-8"})
    assert response.status_code == 422 and "Type pr-7 exactly" in response.content.decode()
    assert Preview.objects.get(pk=preview.pk).desired == "up"
    client.post(f"/previews/{preview.pk}/kill", {"confirm": "pr-7"})
    preview.refresh_from_db()
    assert preview.desired == "down" and preview.status == "deleting"
    assert preview.events.get(action="destroy requested").actor == "ann"


@pytest.mark.parametrize("preview_id", ["999999", "99999999999999999999999"])
def test_an_unknown_preview_is_404(preview_id):
    assert login().get(f"/previews/{preview_id}/").status_code == 404


def test_the_reaper_page_shows_the_plan(kube_env):
    html = login().get("/reaper/").content.decode()
    assert "the next cycle&#x27;s plan" in html or "the next cycle's plan" in html
    assert "nothing is changed by this page" in html


def test_the_reaper_page_shows_the_summary_first_and_the_kept_namespaces_collapsed(kube_env, make_namespace):
    young = make_namespace("rk", labels={"app.kubernetes.io/managed-by": "pr-previews"})  # an orphan within grace
    html = login().get("/reaper/").content.decode()
    positions = [html.index(f'id="{section}"') for section in ("summary", "deletions", "alerts", "keep")]
    assert positions == sorted(positions)
    assert "orphan within grace period" in html[positions[0]:positions[1]]  # counted in the summary
    assert '<details id="keep">' in html  # collapsed unless a page of it was asked for
    if "keep_page=2" not in html:  # others' managed namespaces on a shared cluster may push it to a later page
        assert young in html[positions[3]:]


# --- a container's log ---------------------------------------------------------------------------------

@pytest.mark.parametrize("query,field", [
    ("container=web", "pod"), ("pod=web-1", "container"), ("pod=Web_1&container=web", "pod"),
    ("pod=web-1&container=web&lines=0", "lines"), ("pod=web-1&container=web&lines=201", "lines"),
    ("pod=web-1&container=web&lines=many", "lines"),
])
def test_the_logs_view_refuses_a_bad_request_with_the_field_named(preview, query, field):
    response = login().get(f"/previews/{preview.pk}/logs?{query}")
    assert response.status_code == 400
    errors = response.content.decode().split('id="logs-errors">', 1)[1].split("</p>", 1)[0]
    assert errors.startswith(f"{field}:")


def test_the_logs_view_says_why_a_log_cannot_be_read(preview, kube_env, settings):
    # The preview's namespace does not exist on the cluster: the gateway's own error is shown, not a 500.
    response = login().get(f"/previews/{preview.pk}/logs?pod=web-1&container=web&lines=5")
    assert response.status_code == 200
    assert 'id="log-error"' in response.content.decode()


def test_the_logs_view_needs_the_view_permission(preview):
    assert login(group=None).get(f"/previews/{preview.pk}/logs?pod=web-1&container=web").status_code == 403
