"""Riding out an outage of the service's own database (a restart, a managed failover: seconds to a minute).

`through_database_outage` runs a deploy or teardown task again when its database session is lost, once the
database answers again, for at most DATABASE_OUTAGE_WAIT_SECONDS: a task taken from the queue just before
the outage then runs as soon as the database is back, instead of failing and keeping its preview's deploy
slot until it is found lost. Every step of those tasks is idempotent and runs under the preview's deploy
lock, so running one again from the start is safe. The wait is bounded and only for the database the task
cannot work without; a longer outage leaves the task to the recovery pass (engine/sweep.py `recover`).

`resilient_pusher` is django-q2's pusher (django_q/pusher.py) with one difference: when the broker (the
database) fails, it reconnects once a second instead of sleeping 10 s and ending, to be started again by the
cluster's guard; tasks flow again within a second of the database's return.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from django.db import InterfaceError, OperationalError, close_old_connections, connection

from previews import locks

logger = logging.getLogger(__name__)
T = TypeVar("T")

DATABASE_OUTAGE_WAIT_SECONDS = 30.0
RECONNECT_INTERVAL_SECONDS = 1.0


def through_database_outage(run: Callable[[], T], *, wait: float = DATABASE_OUTAGE_WAIT_SECONDS) -> T:
    deadline = time.monotonic() + wait
    while True:
        try:
            return run()
        except (OperationalError, InterfaceError) as exc:
            if not locks.session_lost(exc) or time.monotonic() >= deadline:
                raise
            logger.warning("the database went away (%s); this task runs again once it answers", exc)
        connection.close()
        while time.monotonic() < deadline and not _database_answers():
            time.sleep(RECONNECT_INTERVAL_SECONDS)


def _database_answers() -> bool:
    try:
        connection.close()
        connection.ensure_connection()
        return True
    except (OperationalError, InterfaceError):
        return False


def resilient_pusher(task_queue, event, broker=None) -> None:
    """django-q2's `pusher`, reconnecting to a broker that failed instead of ending (see the module's doc)."""
    from multiprocessing.process import current_process

    from django_q.brokers import get_broker
    from django_q.conf import Conf
    from django_q.signing import BadSignature, SignedPackage

    broker = broker or get_broker()
    logger.info("%s pushing tasks at %s (reconnecting through database outages)", current_process().name,
                current_process().pid)
    failing = False
    while not event.is_set():
        try:
            task_set = broker.dequeue()
        except Exception as exc:
            if not failing:
                logger.warning("the broker failed (%s); reconnecting every %.0fs", exc, RECONNECT_INTERVAL_SECONDS)
            failing = True
            close_old_connections()
            time.sleep(RECONNECT_INTERVAL_SECONDS)
            continue
        if failing:
            logger.info("the broker answers again")
            failing = False
        for ack_id, payload in task_set or ():
            try:
                task = SignedPackage.loads(payload)
            except (TypeError, BadSignature):
                logger.exception("Failed to push task to queue")
                broker.fail(ack_id)
                continue
            task["cluster"] = Conf.CLUSTER_NAME
            task["ack_id"] = ack_id
            task_queue.put(task)
    logger.info("%s stopped pushing tasks", current_process().name)
