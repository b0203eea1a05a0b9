"""django-q2's `qcluster`, with what every task needs imported before the workers are forked.

The Kubernetes client loads its API modules lazily, on first use: CoreV1Api alone costs 0.6 s of CPU
on an idle machine and several seconds on a busy one. Imported in each worker, that cost came back
with every worker django-q started or recycled (every Q_RECYCLE tasks), while deploys queued. Imported
here, in the parent, every forked worker starts with it.

Its pusher is `previews.outages.resilient_pusher`: through a database outage it reconnects every second
instead of ending after a 10 s sleep (django-q2's), so tasks flow again as soon as the database is back.
"""

import multiprocessing

from django.conf import settings
from django_q.management.commands.qcluster import Command as QclusterCommand

from previews import heartbeat


class Command(QclusterCommand):
    def handle(self, *args, **options):
        import previews.tasks  # noqa: F401  (the task functions and everything they import)
        from previews.gateways import kube

        kube.preload()
        if settings.PREVIEWS_HEARTBEAT_FILE:
            # The probe's file, touched while the cluster's sentinel (a child of this process) lives.
            heartbeat.beat(settings.PREVIEWS_HEARTBEAT_FILE, 10.0, lambda: bool(multiprocessing.active_children()))
        import django_q.cluster

        from previews.outages import resilient_pusher

        django_q.cluster.pusher = resilient_pusher  # what the cluster's Sentinel spawns (and spawns again)
        super().handle(*args, **options)
