"""django-q2 tasks: thin entry points into the service layer."""

from previews import notifications, provisioning
from previews import sleep as sleeping
from previews.outages import through_database_outage


def deploy_preview(preview_id: int, generation: int) -> str:
    # Run again from the start once the database is back if it went away (bounded; see previews/outages.py).
    return through_database_outage(lambda: provisioning.deploy(preview_id, generation))


def teardown_preview(preview_id: int, generation: int) -> str:
    return through_database_outage(lambda: provisioning.teardown(preview_id, generation))


def sweep() -> dict:
    """The engine's scheduled sweep (see previews/engine/sweep.py)."""
    from previews.engine import sweep as engine_sweep

    return engine_sweep.sweep()


def sync_github(preview_id: int, expiry_warning: bool = False) -> str:
    return notifications.sync_github(preview_id, expiry_warning)


def sync_github_many(preview_ids: list[int]) -> dict:
    """A batch of GitHub syncs (a mass deletion's), each as `sync_github`; one failing never stops the rest."""
    import logging

    outcomes: dict[str, int] = {}
    for preview_id in preview_ids:
        try:
            outcome = notifications.sync_github(preview_id)
        except Exception:
            logging.getLogger(__name__).exception("GitHub sync of preview %s failed", preview_id)
            outcome = "error"
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    return outcomes


def reap() -> dict:
    """The scheduled reaper cycle (dry-run when PREVIEWS_REAPER_DRY_RUN is set)."""
    from django.conf import settings

    from previews import reaper_cycle

    result = reaper_cycle.run_cycle(dry_run=settings.PREVIEWS_REAPER_DRY_RUN)
    return {"run": result.run.pk, **result.run.summary, "errors": result.errors, "alert": result.plan.alert,
            "data": reap_data()}


def reap_data() -> dict:
    """The data reaper's cycle (previews/data_reaper.py), after the namespaces'; its failure is its own."""
    import logging

    from django.conf import settings

    from previews import data_reaper
    from previews.gateways import preview_db

    if not preview_db.is_configured():
        return {"skipped": "PREVIEWS_DATA_DATABASE_URL is not set"}
    try:
        cycle = data_reaper.run_cycle(dry_run=settings.PREVIEWS_REAPER_DRY_RUN)
    except preview_db.DataError as exc:
        logging.getLogger(__name__).warning("data reaper: nothing decided: %s", exc)
        return {"error": f"nothing decided: {exc}"}
    return {"run": cycle.run.pk, **cycle.run.summary, "errors": cycle.errors}


def sleep_preview(preview_id: int, generation: int) -> str:
    return sleeping.sleep(preview_id, generation)


def sleep_idle() -> dict:
    """The `sleep` schedule: put idle previews to sleep (see previews/sleep.py)."""
    return sleeping.sleep_idle()


def answer_comment(full_name: str, pr_number: int, comment_id: int, reaction: str, reply: str = "") -> str:
    """React to a /preview comment and, for some outcomes, reply (see previews/pr_commands.py)."""
    from previews import pr_commands

    return pr_commands.answer(full_name, pr_number, comment_id, reaction, reply)
