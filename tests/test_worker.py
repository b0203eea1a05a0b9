"""A real django-q2 cluster picks up tasks from the Postgres (ORM) broker."""

import os
import subprocess
import sys

import pytest
from django_q.tasks import async_task, fetch

from tests.conftest import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_a_queued_task_runs_on_the_worker_and_its_result_is_stored(qcluster):
    task_id = async_task("math.factorial", 10)
    task = wait_until(lambda: fetch(task_id), timeout=60, message="the worker to run the task")
    assert task.success
    assert task.result == 3628800


WORKER_PARENT = """
import sys

import django

django.setup()
import django_q.management.commands.qcluster as django_q_command
from django.core.management import get_commands, load_command_class


class Cluster:  # stands in for django-q2's Cluster at the moment it would fork the workers
    def start(self):
        print("core api imported" if "kubernetes.client.api.core_v1_api" in sys.modules else "not imported")


django_q_command.Cluster = Cluster
print(get_commands()["qcluster"])
load_command_class(get_commands()["qcluster"], "qcluster").handle()
"""


def test_the_worker_imports_the_kubernetes_api_before_it_forks_its_workers():
    result = subprocess.run([sys.executable, "-c", WORKER_PARENT], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings_test"})
    assert result.stdout.split() == ["previews", "core", "api", "imported"], result.stderr[-2000:]
