"""The dashboard in a real headless Chromium (Debian's package), driven by Playwright.

A real django-q2 worker deploys and tears down on the real local cluster.
Screenshots of the list and detail pages are saved in test-artifacts/.
"""

import base64
import os
import shutil

import pytest
from django.contrib.auth.models import Group, User
from kubernetes import client

from previews import services
from previews.models import EventAction, Preview
from previews.services import Actor, PreviewRequest
from tests.conftest import ROOT, namespace_exists, node_image, wait_until

pytestmark = [pytest.mark.kube, pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync", "--disable-dev-shm-usage"]


def local_certificate_spki() -> str:
    """The SHA-256 of the local wildcard certificate's public key, base64: what Chromium is told to accept, as a
    browser that trusts the local CA would (no other certificate error is ignored)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization

    pem = (ROOT / ".state" / "kube" / "pki" / "ingress-wildcard.crt")
    if not pem.exists():
        return ""
    key = x509.load_pem_x509_certificate(pem.read_bytes()).public_key()
    digest = hashes.Hash(hashes.SHA256())
    digest.update(key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))
    return base64.b64encode(digest.finalize()).decode()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    assert os.path.exists(CHROMIUM), "Chromium is needed: apt-get install chromium (make test does it)"
    # Playwright's sync API runs an event loop in this thread for the whole module; the ORM calls made
    # by the tests and their fixtures here are ordinary synchronous ones.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            spki = local_certificate_spki()
            args = [*CHROMIUM_ARGS, *([f"--ignore-certificate-errors-spki-list={spki}"] if spki else [])]
            chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
            yield chromium
            chromium.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def page(browser, live_server):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=live_server.url)
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


def test_log_in_browse_extend_and_kill_a_preview(page, preview_repo, engine, kube_api):
    ARTIFACTS.mkdir(exist_ok=True)
    user = User.objects.create_user(username="ann", password="a-long-password")
    user.groups.add(Group.objects.get(name="Preview operators"))
    preview = services.preview_upsert(repository=preview_repo, pr_number=5, actor=Actor("token", "ci"),
                                      request=PreviewRequest(head_sha="f" * 40, title="Add a wishlist",
                                                             author="mona", images=("localhost/previews-sample:pr-5",)))
    preview = preview.preview
    wait_until(lambda: Preview.objects.get(pk=preview.pk).status == "ready", timeout=90, message="ready")

    page.goto("/")
    assert "/accounts/login/" in page.url
    page.fill("input[name=username]", "ann")
    page.fill("input[name=password]", "a-long-password")
    page.click("button[type=submit]")

    row = page.locator(f"#preview-{preview.pk}")
    row.wait_for()
    assert "Add a wishlist" in row.inner_text()
    assert row.locator("[data-status=ready]").is_visible()
    page.screenshot(path=str(ARTIFACTS / "dashboard-list.png"), full_page=True)

    row.locator("a.strong").click()
    page.wait_for_selector("#timeline")
    assert page.locator("text=Deployment web").is_visible()
    before = page.locator("#expires-at").get_attribute("data-expires")
    page.check("input[name=choice][value='72']")
    page.fill("#extend-form input[name=reason]", "Design review on Monday")
    page.click("#extend-form button[type=submit]")
    page.wait_for_selector("text=Extended by 72 hours.")
    after = page.locator("#expires-at").get_attribute("data-expires")
    assert after > before
    assert page.locator("#timeline li[data-action=extended]").inner_text().count("Design review on Monday") == 1
    page.screenshot(path=str(ARTIFACTS / "dashboard-detail.png"), full_page=True)

    page.fill("#kill-form input[name=confirm]", preview.namespace)
    page.click("#kill-form button[type=submit]")
    page.wait_for_selector(f"text=Deleting namespace {preview.namespace}.")
    core = client.CoreV1Api(kube_api)
    wait_until(lambda: not namespace_exists(core, preview.namespace), timeout=90, message="the namespace to go")
    wait_until(lambda: Preview.objects.get(pk=preview.pk).status == "deleted", timeout=30, message="deleted")

    page.goto("/")
    page.wait_for_selector("#rows")
    assert page.locator(f"#preview-{preview.pk}").count() == 0


def test_the_list_refreshes_statuses_in_place(page, preview_repo):
    user = User.objects.create_user(username="bo", password="a-long-password")
    user.groups.add(Group.objects.get(name="Preview viewers"))
    preview = services.preview_upsert(repository=preview_repo, pr_number=6, actor=Actor("token", "ci"),
                                      request=PreviewRequest(head_sha="e" * 40)).preview
    page.goto("/accounts/login/")
    page.fill("input[name=username]", "bo")
    page.fill("input[name=password]", "a-long-password")
    page.click("button[type=submit]")
    badge = page.locator(f"#preview-{preview.pk} .badge")
    assert badge.get_attribute("data-status") == "pending"
    page.evaluate("window.__marker = 'same page'")
    services.preview_set_status(preview_id=preview.pk, generation=preview.generation, status="failed",
                                action=EventAction.DEPLOY_FAILED, message="boom")
    page.wait_for_selector(f"#preview-{preview.pk} .badge[data-status=failed]", timeout=15_000)
    assert page.evaluate("window.__marker") == "same page"  # no full reload


def test_the_dashboards_link_opens_the_preview_and_its_app_answers(page, real_repo, real_node, engine):
    ARTIFACTS.mkdir(exist_ok=True)
    user = User.objects.create_user(username="cy", password="a-long-password")
    user.groups.add(Group.objects.get(name="Preview viewers"))
    sha = "9" * 40
    image = node_image(real_node, "pr-4-9999999")
    preview = services.preview_upsert(repository=real_repo, pr_number=4, actor=Actor("token", "ci"),
                                      request=PreviewRequest(head_sha=sha, title="Open me", images=(image,))).preview
    wait_until(lambda: Preview.objects.get(pk=preview.pk).status == "ready", timeout=90, message="ready")

    page.goto("/accounts/login/")
    page.fill("input[name=username]", "cy")
    page.fill("input[name=password]", "a-long-password")
    page.click("button[type=submit]")
    page.goto(f"/previews/{preview.pk}/")
    link = page.locator(f"a[href='{preview.url}']")
    assert link.inner_text() == preview.url
    # Chromium resolves *.localhost to loopback itself, as it does for anyone who clicks the link here.
    for _ in range(20):
        link.click()
        page.wait_for_load_state()
        if page.locator("#commit").count():
            break
        page.go_back()
        page.wait_for_timeout(500)
    assert page.url.rstrip("/") == preview.url
    assert page.locator("#pr").inner_text() == "4"
    assert page.locator("#commit").get_attribute("title") == sha
    page.screenshot(path=str(ARTIFACTS / "preview-app.png"), full_page=True)
