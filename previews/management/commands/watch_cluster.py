"""`manage.py watch_cluster`: the cluster watcher (see previews/engine/watcher.py)."""

import signal
import threading

from django.core.management.base import BaseCommand

from previews.engine.watcher import Watcher


class Command(BaseCommand):
    help = ("Follow the cluster through Kubernetes watches and move previews to ready, failed or deleted. "
            "Run one or more; one leads (a Postgres advisory lock), the others stand by.")

    def handle(self, *args, **options):
        stop = threading.Event()

        def request_stop(signum, frame):
            stop.set()

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        watcher = Watcher()
        self.stdout.write(f"watcher {watcher.holder} starting")
        watcher.run(stop)
        self.stdout.write(f"watcher {watcher.holder} stopped")
