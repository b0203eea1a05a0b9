"""A real django-q2 cluster picks up tasks from the Postgres (ORM) broker."""

import pytest
from django_q.tasks import async_task, fetch

from tests.conftest import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_a_queued_task_runs_on_the_worker_and_its_result_is_stored(qcluster):
    task_id = async_task("math.factorial", 10)
    task = wait_until(lambda: fetch(task_id), timeout=60, message="the worker to run the task")
    assert task.success
    assert task.result == 3628800
