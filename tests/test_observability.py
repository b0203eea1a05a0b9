"""/metrics, request ids, JSON logs, and readiness when a dependency is down."""

import json
import logging
import os
import subprocess
import sys
from dataclasses import replace

import pytest
from django.utils import timezone
from django_q.models import Task

from config.logs import JsonFormatter, RequestIdFilter
from previews import reaper, reaper_cycle, services
from previews.models import GitHubState, ReaperRun
from tests.conftest import ROOT
from tests.factories import make_preview, make_repository

pytestmark = pytest.mark.django_db


def scrape(client) -> str:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    return response.content.decode()


def line(text: str, prefix: str) -> str:
    return next(x for x in text.splitlines() if x.startswith(prefix))


def test_metrics_count_previews_by_status(client):
    repo = make_repository()
    make_preview(repo, status="ready")
    make_preview(repo, status="ready")
    make_preview(repo, status="failed")
    text = scrape(client)
    assert 'previews_previews{status="ready"} 2.0' in text
    assert 'previews_previews{status="failed"} 1.0' in text
    assert 'previews_previews{status="deleting"} 0.0' in text


def test_metrics_have_deploy_and_teardown_duration_histograms(client):
    preview = make_preview()
    for seconds in (0.5, 3, 45):
        preview.events.create(actor_kind="system", action="ready", details={"duration_seconds": seconds})
    preview.events.create(actor_kind="system", action="deleted", details={"duration_seconds": 7.5})
    text = scrape(client)
    assert 'previews_deploy_duration_seconds_bucket{le="1.0",outcome="ready"} 1.0' in text
    assert 'previews_deploy_duration_seconds_bucket{le="5.0",outcome="ready"} 2.0' in text
    assert 'previews_deploy_duration_seconds_bucket{le="+Inf",outcome="ready"} 3.0' in text
    assert 'previews_deploy_duration_seconds_sum{outcome="ready"} 48.5' in text
    assert 'previews_teardown_duration_seconds_count{outcome="deleted"} 1.0' in text


def test_metrics_count_task_failures_reaper_work_and_github_rate_limit(client):
    now = timezone.now()
    Task.objects.create(id="t1", name="deploy_preview:1:1", func="previews.tasks.deploy_preview", started=now,
                        stopped=now, success=False, result="boom")
    ReaperRun.objects.create(summary={"done": ["delete pr-1: teardown requested", "warn-expiry pr-2: warned"],
                                      "done_by_action": {"delete": 1, "warn-expiry": 1}})
    ReaperRun.objects.create(dry_run=True, summary={"done": ["delete pr-9: gone"], "done_by_action": {"delete": 1}})
    ReaperRun.objects.create(alert="circuit breaker: 9 of 10", summary={"breaker_tripped": True})
    ReaperRun.objects.create(alert="clock check: ...", summary={"breaker_tripped": False, "expiry_paused": True})
    GitHubState.objects.create(key="rate_limit", data={"remaining": 4321})
    text = scrape(client)
    assert 'previews_task_failures_total{task="deploy_preview"} 1.0' in text
    assert line(text, "previews_reaper_deletions_total") == "previews_reaper_deletions_total 1.0"
    assert line(text, "previews_reaper_kept_unknown ") == "previews_reaper_kept_unknown 0.0"
    assert line(text, "previews_reaper_breaker_trips_total") == "previews_reaper_breaker_trips_total 1.0"
    assert line(text, "previews_reaper_expiry_paused_total") == "previews_reaper_expiry_paused_total 1.0"
    assert line(text, "previews_github_rate_limit_remaining") == "previews_github_rate_limit_remaining 4321.0"


def test_metrics_report_the_last_cycles_kept_for_unknown(client):
    """What a real cycle records is what /metrics reads (the summary's counts, not its text)."""
    now = timezone.now()
    unknown = reaper.Decision(reaper.KEEP, reaper.PR_UNKNOWN, "pr-1")
    plan = reaper.Plan([unknown, replace(unknown, namespace="pr-2"), reaper.Decision(reaper.KEEP, reaper.PR_OPEN,
                                                                                         "pr-3")], allowance=10)
    reaper_cycle.execute(plan, reaper_cycle.Snapshot([], [], {}), dry_run=False, now=now)
    assert line(scrape(client), "previews_reaper_kept_unknown ") == "previews_reaper_kept_unknown 2.0"


def test_the_migration_counts_the_deletions_of_runs_recorded_before_done_by_action(client):
    from importlib import import_module

    from django.db import connection
    old = ReaperRun.objects.create(summary={"done": ["delete pr-1: gone", "delete pr-2: teardown requested",
                                                     "warn-expiry pr-3: warned"]})
    data = ReaperRun.objects.create(summary={"scope": "preview data", "done": ["drop pv_1: dropped"]})
    with connection.cursor() as cursor:
        cursor.execute(import_module("previews.migrations.0012_code_health").BACKFILL_DONE_BY_ACTION)
    old.refresh_from_db()
    data.refresh_from_db()
    assert old.summary["done_by_action"] == {"delete": 2, "warn-expiry": 1}
    assert "done_by_action" not in data.summary
    assert line(scrape(client), "previews_reaper_deletions_total") == "previews_reaper_deletions_total 2.0"


def test_metrics_time_api_requests(client):
    repo = make_repository(owner="acme", name="shop")
    token = services.token_create(name="ci", repository=repo)[1]
    client.get("/api/v1/previews", HTTP_AUTHORIZATION=f"Bearer {token}")
    text = scrape(client)
    assert 'previews_http_request_duration_seconds_count{method="GET",route="api/v1/previews",status="2xx"}' in text


def test_metrics_can_require_a_token(client, settings):
    settings.PREVIEWS_METRICS_TOKEN = "scrape-me"
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-me").status_code == 200


def test_every_response_carries_a_request_id_and_keeps_a_sane_one(client):
    generated = client.get("/healthz")["X-Request-ID"]
    assert len(generated) == 32
    assert client.get("/healthz", HTTP_X_REQUEST_ID="ci-run-42.1")["X-Request-ID"] == "ci-run-42.1"
    assert client.get("/healthz", HTTP_X_REQUEST_ID="bad id\n")["X-Request-ID"] != "bad id\n"


def test_the_access_log_is_json_with_the_request_id_and_no_query_string(client, caplog):
    caplog.set_level("INFO", logger="previews.access")
    client.get("/healthz?token=secret", HTTP_X_REQUEST_ID="req-7")
    [record] = [r for r in caplog.records if r.name == "previews.access"]
    RequestIdFilter().filter(record)
    data = json.loads(JsonFormatter().format(record))
    assert data["path"] == "/healthz" and data["status"] == 200 and data["method"] == "GET"
    assert "secret" not in json.dumps(data)


def test_json_logs_carry_the_request_id_of_the_request_being_served():
    from config.logs import request_id_var

    token = request_id_var.set("abc123")
    try:
        record = logging.LogRecord("previews", logging.WARNING, __file__, 1, "deploy %s failed", ("pr-1",), None)
        RequestIdFilter().filter(record)
        data = json.loads(JsonFormatter().format(record))
    finally:
        request_id_var.reset(token)
    assert data == {**data, "level": "WARNING", "message": "deploy pr-1 failed", "request_id": "abc123"}


def test_readyz_fails_when_the_database_is_down():
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings_test",
           "DATABASE_URL": "postgres://nobody@127.0.0.1:9/none", "DJANGO_ALLOWED_HOSTS": "testserver"}
    code = ("import django, json; django.setup(); from django.test import Client; r = Client().get('/readyz'); "
            "print(r.status_code, json.dumps(r.json()))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=60)
    status, body = result.stdout.strip().split(" ", 1)
    assert status == "503", result.stderr
    assert json.loads(body)["checks"]["database"].startswith("error:")
