"""Long-polls against a real threaded server: gunicorn with gthread workers, as shipped (config/gunicorn.py).

Each `GET ...?wait=N` holds a web thread. Without caps, as many waits as threads starve everything else,
including the liveness probe (shown below, so the claim is measured, not assumed); with the caps, waits beyond
them are refused at once with 429 and Retry-After, and /healthz always finds a thread.
"""

import os
import socket
import subprocess
import sys
import threading
import time

import pytest
import requests
from django.conf import settings

from previews import services
from previews.models import Preview
from tests.conftest import ROOT, wait_until
from tests.factories import make_preview, make_repository

pytestmark = pytest.mark.django_db(transaction=True)
THREADS = 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server():
    """Start gunicorn on the test database with the given caps; yields a function returning its base URL."""
    started: list[subprocess.Popen] = []

    def start(waits_per_token: int, waits_total: int) -> str:
        port = _free_port()
        db = settings.DATABASES["default"]
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings_test",
               "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
               "GUNICORN_BIND": f"127.0.0.1:{port}", "GUNICORN_WORKERS": "1", "GUNICORN_THREADS": str(THREADS),
               "PREVIEWS_API_WAITS_PER_TOKEN": str(waits_per_token), "PREVIEWS_API_WAITS_TOTAL": str(waits_total)}
        proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.py", "config.wsgi"],
                                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        started.append(proc)
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                return requests.get(f"{url}/healthz", timeout=1).status_code == 200
            except requests.RequestException:
                return False

        wait_until(up, timeout=30, interval=0.2, message="gunicorn to answer")
        return url

    yield start
    for proc in started:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture
def pending():
    repository = make_repository(owner="acme", name="shop")
    preview = make_preview(repository, pr_number=5, status="pending")
    tokens = [services.token_create(name=f"ci-{n}", repository=repository)[1] for n in range(2)]
    return preview, tokens


def _wait_in_background(url: str, token: str, results: list) -> threading.Thread:
    def call():
        try:
            response = requests.get(f"{url}/api/v1/repos/acme/shop/previews/5?wait=30",
                                    headers={"Authorization": f"Bearer {token}"}, timeout=60)
            results.append((response.status_code, response.headers.get("Retry-After")))
        except requests.RequestException as exc:
            results.append((0, str(exc)))

    thread = threading.Thread(target=call)
    thread.start()
    return thread


def _settle(preview: Preview) -> None:
    Preview.objects.filter(pk=preview.pk).update(status="ready", observed_generation=preview.generation)


def _healthz_seconds(url: str, timeout: float) -> float | None:
    started = time.monotonic()
    try:
        requests.get(f"{url}/healthz", timeout=timeout)
    except requests.Timeout:
        return None
    return time.monotonic() - started


def test_without_caps_waits_starve_the_liveness_probe(server, pending):
    """The review's claim, measured: as many waits as threads, and /healthz gets no answer."""
    preview, tokens = pending
    url = server(waits_per_token=100, waits_total=1000)
    results: list = []
    threads = [_wait_in_background(url, tokens[0], results) for _ in range(THREADS)]
    time.sleep(1.5)
    assert _healthz_seconds(url, timeout=3) is None, "every thread is held by a wait"
    _settle(preview)
    for t in threads:
        t.join()
    assert [status for status, _ in results] == [200] * THREADS


def test_waits_beyond_the_caps_are_429_with_retry_after_and_probes_still_answer(server, pending):
    preview, tokens = pending
    url = server(waits_per_token=2, waits_total=3)
    held: list = []
    threads = [_wait_in_background(url, tokens[0], held) for _ in range(2)]
    threads.append(_wait_in_background(url, tokens[1], held))
    time.sleep(1.5)
    assert held == []  # three waits are being held

    headers = [{"Authorization": f"Bearer {token}"} for token in tokens]
    per_token = requests.get(f"{url}/api/v1/repos/acme/shop/previews/5?wait=30", headers=headers[0], timeout=5)
    assert per_token.status_code == 429 and per_token.headers["Retry-After"] == "5"
    assert per_token.headers["Content-Type"] == "application/problem+json"
    assert "this token already holds 2 waiting requests" in per_token.json()["detail"]
    total = requests.get(f"{url}/api/v1/repos/acme/shop/previews/5?wait=30", headers=headers[1], timeout=5)
    assert total.status_code == 429 and "3 requests are already waiting" in total.json()["detail"]
    # A read without wait, the probes, and the dashboard's login page are answered at once.
    assert requests.get(f"{url}/api/v1/repos/acme/shop/previews/5", headers=headers[0], timeout=5).ok
    seconds = _healthz_seconds(url, timeout=3)
    assert seconds is not None and seconds < 1
    assert requests.get(f"{url}/accounts/login/", timeout=3).status_code == 200

    _settle(preview)
    for t in threads:
        t.join()
    assert [status for status, _ in held] == [200, 200, 200]
    # The slots are given back: a new wait on the settled preview is answered.
    assert requests.get(f"{url}/api/v1/repos/acme/shop/previews/5?wait=30", headers=headers[0], timeout=5).ok


def test_the_shipped_caps_leave_threads_free(settings):
    half_of_the_threads = int(os.environ.get("GUNICORN_THREADS", "8")) // 2
    assert half_of_the_threads >= settings.PREVIEWS_API_WAITS_TOTAL
    assert settings.PREVIEWS_API_WAITS_PER_TOKEN < settings.PREVIEWS_API_WAITS_TOTAL
