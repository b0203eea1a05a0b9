"""The data reaper: its pure plan as a table, and a cycle against the real shared server."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone
from psycopg import sql

from previews import data_reaper
from previews.data_reaper import DROP, KEEP, DataObject, OwnerRecord
from previews.gateways import preview_db
from previews.models import Preview, ReaperRun, Repository

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
GRACE = timedelta(minutes=60)


def marker(repository_id=1, pr=7, kind="role", age=timedelta(hours=5), repository="acme/shop"):
    return preview_db.Marker(kind, repository_id, repository, pr, NOW - age)


def group(name="pv1_acme_shop_pr7", mode="schema", **kw) -> list[DataObject]:
    return [DataObject("role", name, marker(kind="role", **kw)), DataObject(mode, name, marker(kind=mode, **kw))]


def owner(status="ready", desired="up", deleted_ago=None, name="pv1_acme_shop_pr7") -> OwnerRecord:
    return OwnerRecord(11, status, desired, name, NOW - deleted_ago if deleted_ago else None)


CASES = [
    # (what, objects, owners, expected action, expected reason)
    ("orphan past the grace period", group(), {}, DROP, data_reaper.ORPHAN),
    ("orphan within the grace period", group(age=timedelta(minutes=10)), {}, KEEP, data_reaper.WITHIN_GRACE),
    ("database orphan", group(mode="database"), {}, DROP, data_reaper.ORPHAN),
    ("a role left alone after a crash", group()[:1], {}, DROP, data_reaper.ORPHAN),
    ("preview ready", group(), {(1, 7): owner()}, KEEP, data_reaper.PREVIEW_LIVE),
    ("preview failed but up", group(), {(1, 7): owner(status="failed")}, KEEP, data_reaper.PREVIEW_LIVE),
    ("preview pending (reopened)", group(), {(1, 7): owner(status="pending")}, KEEP, data_reaper.PREVIEW_LIVE),
    ("preview being torn down", group(), {(1, 7): owner(status="deleting", desired="down")}, KEEP,
     data_reaper.TEARING_DOWN),
    ("preview deleted long ago", group(), {(1, 7): owner(status="deleted", desired="down",
                                                          deleted_ago=timedelta(hours=2))},
     DROP, data_reaper.PREVIEW_DELETED),
    ("preview deleted just now", group(), {(1, 7): owner(status="deleted", desired="down",
                                                          deleted_ago=timedelta(minutes=5))},
     KEEP, data_reaper.WITHIN_GRACE),
    ("unreadable marker", [DataObject("role", "pv1_x_pr7", None), DataObject("schema", "pv1_x_pr7", marker())], {},
     KEEP, data_reaper.MALFORMED),
    ("markers naming two previews", [DataObject("role", "n", marker(pr=7)), DataObject("schema", "n", marker(pr=8))],
     {}, KEEP, data_reaper.DISAGREE),
    ("a schema and a database under one name", [DataObject("schema", "n", marker()),
                                                DataObject("database", "n", marker())], {}, KEEP,
     data_reaper.MALFORMED),
    ("another repository's live preview does not save an orphan", group(), {(2, 7): owner()}, DROP,
     data_reaper.ORPHAN),
]


@pytest.mark.parametrize(("what", "objects", "owners", "action", "reason"), CASES, ids=[c[0] for c in CASES])
def test_plan_decides_each_name_once(what, objects, owners, action, reason):
    plan = data_reaper.plan(objects, owners, NOW, GRACE, max_drops=10)
    assert [(d.action, d.reason) for d in plan.decisions] == [(action, reason)]


def test_plan_caps_drops_per_cycle_and_records_the_rest():
    objects = [obj for pr in range(1, 6) for obj in group(name=f"pv1_acme_shop_pr{pr}", pr=pr)]
    plan = data_reaper.plan(objects, {}, NOW, GRACE, max_drops=2)
    assert [d.action for d in plan.decisions] == [DROP, DROP, KEEP, KEEP, KEEP]
    assert plan.decisions[2].reason == data_reaper.CAPPED
    assert plan.decisions[2].detail == f"would drop: {data_reaper.ORPHAN}"
    assert data_reaper.plan(objects, {}, NOW, GRACE, max_drops=0).drops == []


def test_a_drop_decision_names_what_to_drop_and_whose_it_was():
    (decision,) = data_reaper.plan(group(mode="database"), {}, NOW, GRACE, 10).decisions
    assert (decision.name, decision.mode, decision.kinds) == ("pv1_acme_shop_pr7", "database", ("database", "role"))
    assert (decision.repository_id, decision.repository, decision.pr_number) == (1, "acme/shop", 7)
    assert decision.as_dict()["scope"] == "preview data"


# --- a cycle on the real server -------------------------------------------------------------------

@pytest.mark.django_db
def test_a_cycle_drops_orphaned_schema_and_database_and_keeps_open_or_unknown(data_settings, settings):
    settings.PREVIEWS_REAPER_GRACE_MINUTES = 0
    settings.PREVIEWS_DATA_REAPER_MAX_DROPS = 10
    repository = Repository.objects.create(owner="acme", name=f"reap-{data_settings.prefix}", base_domain="x.dev",
                                           namespace_prefix=f"r{data_settings.prefix[-6:]}")
    later = timezone.now() + timedelta(days=1)

    def preview(pr: int, status: str) -> Preview:
        return Preview.objects.create(repository=repository, pr_number=pr,
                                      namespace=f"{repository.namespace_prefix}-{pr}",
                                      head_sha="1" * 40, expires_at=later, status=status,
                                      desired="down" if status == "deleted" else "up",
                                      deleted_at=timezone.now() - timedelta(hours=1) if status == "deleted" else None)

    def make(mode: str, pr: int, repository_id: int = repository.pk) -> preview_db.Spec:
        name = preview_db.object_name(repository_id, repository.full_name, pr)
        spec = preview_db.Spec(mode=mode, name=name, owner=preview_db.Owner(repository_id, repository.full_name, pr),
                               template=data_settings.template if mode == "database" else "")
        preview_db.ensure(spec, "pw")
        return spec

    deleted = preview(1, "deleted")
    live = preview(2, "ready")
    specs = {
        "orphan schema": make("schema", 3),  # no preview at all
        "deleted preview's database": make("database", 1),
        "live preview's schema": make("schema", 2),
    }
    Preview.objects.filter(pk=deleted.pk).update(data_mode="database",
                                                 data_name=specs["deleted preview's database"].name)
    Preview.objects.filter(pk=live.pk).update(data_mode="schema", data_name=specs["live preview's schema"].name)
    # An object whose marker cannot be read: unknown owner, never dropped.
    unknown = make("schema", 4)
    set_schema_comment(data_settings, unknown.name, "pr-previews {broken")
    try:
        dry = data_reaper.run_cycle(dry_run=True)
        assert ReaperRun.objects.get(pk=dry.run.pk).dry_run
        names = {o.name for o in preview_db.list_marked()}
        assert all(spec.name in names for spec in specs.values())  # a dry run drops nothing

        cycle = data_reaper.run_cycle()
        by_name = {d.name: d for d in cycle.plan.decisions}
        assert by_name[specs["orphan schema"].name].action == DROP
        assert by_name[specs["deleted preview's database"].name].reason == data_reaper.PREVIEW_DELETED
        assert by_name[specs["live preview's schema"].name].reason == data_reaper.PREVIEW_LIVE
        assert by_name[unknown.name].reason == data_reaper.MALFORMED
        assert cycle.errors == []
        left = {(o.kind, o.name) for o in preview_db.list_marked()}
        assert not any(n == specs["orphan schema"].name for _, n in left)
        assert not any(n == specs["deleted preview's database"].name for _, n in left)
        assert ("schema", specs["live preview's schema"].name) in left
        assert ("role", unknown.name) in left  # its role is marked fine, but the group's owner is unknown
        deleted.refresh_from_db()
        assert deleted.data_name == "" and deleted.events.filter(action="data reaped").exists()
        live.refresh_from_db()
        assert live.data_size_bytes == 0 and live.data_size_at is not None
        run = ReaperRun.objects.get(pk=cycle.run.pk)
        assert run.summary["scope"] == "preview data" and len(run.decisions) == len(cycle.plan.decisions)

        call_command("reap_data", "--dry-run", "--json")
    finally:
        set_schema_comment(data_settings, unknown.name, unknown.owner.marker("schema"))
        for spec in [*specs.values(), unknown]:
            with contextlib.suppress(preview_db.DataError):
                preview_db.drop(spec.mode, spec.name, spec.owner)


def set_schema_comment(server, name: str, comment: str) -> None:
    with server.connect(server.shared) as conn:
        conn.execute(sql.SQL("COMMENT ON SCHEMA {} IS {}").format(sql.Identifier(name), sql.Literal(comment)))


@pytest.mark.django_db
def test_a_data_cycle_does_not_hide_the_namespace_cycle_from_the_metrics(client):
    ReaperRun.objects.create(decisions=[{"action": "keep", "reason": "PR state unknown"}],
                             summary={"by_reason": {"keep": {"PR state unknown": 1}}, "done_by_action": {}})
    ReaperRun.objects.create(summary={"scope": "preview data", "done": ["drop pv1_x_pr1: role dropped"]},
                             decisions=[{"action": "keep", "reason": data_reaper.PREVIEW_LIVE}])
    text = client.get("/metrics").content.decode()
    assert "previews_reaper_kept_unknown 1.0" in text
    assert "previews_reaper_deletions_total 0.0" in text
