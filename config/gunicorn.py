"""gunicorn settings for the web server (the container's default command)."""

import os
import shutil

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", "2"))
threads = int(os.environ.get("GUNICORN_THREADS", "8"))  # GET ?wait=N holds a thread, not a process
worker_class = "gthread"
timeout = 150  # longer than the API's longest wait (120 s)
graceful_timeout = 30
accesslog = None  # requests are logged by the app as JSON, with their request id
control_socket_disable = True


def on_starting(server):
    # Metrics from every worker process are merged through this directory (prometheus_client multiprocess).
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        shutil.rmtree(directory, ignore_errors=True)
        os.makedirs(directory, exist_ok=True)


def child_exit(server, worker):
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
