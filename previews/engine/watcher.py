"""The cluster watcher: one process that learns from Kubernetes watches how previews are doing.

It follows Namespaces, Deployments, StatefulSets, ReplicaSets, Jobs, Pods and
Gateway API HTTPRoutes carrying our managed-by label (HTTPRoutes only where
the cluster serves them: without the CRD they count as listed and empty, and
are looked for again every ABSENT_RETRY_SECONDS), and Warning events in our
namespaces, the way
client-go's informers do: list, then watch from the list's resourceVersion
with bookmarks; after a dropped connection, watch again from the last version
seen; on 410 Gone, list again. A small summary of each object is kept in
memory (`ClusterCache`).

When something changes in a namespace whose preview is rolling out, the
preview is assessed (`rollout.assess`) and moved to ready, or to failed once
a failing reason has lasted PREVIEWS_FAIL_FAST_SECONDS, or once
PREVIEWS_ROLLOUT_TIMEOUT has passed since the apply. When a namespace goes,
the preview being deleted is marked deleted. Every change goes through the
services with the usual generation checks, so a superseded generation is never
marked ready.

Only one watcher acts at a time: the leader holds a Postgres advisory lock;
others wait as standbys. It writes a heartbeat (`WatcherStatus`) that
/metrics and /readyz report.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import socket
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import DatabaseError, InterfaceError, connection
from django.db.models import F
from django.utils import timezone

from previews import heartbeat, locks, policy, services
from previews.engine import rollout, sweep
from previews.gateways import errors
from previews.gateways.kube import views as kube_view
from previews.gateways.kube import watch as kube_watch
from previews.models import Preview, WatcherStatus

logger = logging.getLogger(__name__)

LEADER_LOCK = (0x70726576, 0)  # ("prev", 0): the DEPLOY lock space, key 0 is never a preview id
HEARTBEAT_SECONDS = 5.0
# How often the leader hands lost deploys out again and fills free slots (engine/sweep.py `recover`): a deploy whose
# worker or database session died is running again within this plus PREVIEWS_LOST_TASK_SECONDS.
RECOVER_SECONDS = 5.0
REFRESH_SECONDS = 1.0
MAX_BATCH = 5000
ABSENT_RETRY_SECONDS = 60.0  # how often a kind the cluster does not serve (a CRD not installed) is looked for


class ClusterCache:
    """Summaries of the objects the watcher follows, by namespace. No I/O."""

    def __init__(self) -> None:
        self.namespaces: dict[str, dict] = {}
        self.objects: defaultdict[str, rollout.NamespaceObjects] = defaultdict(rollout.NamespaceObjects)

    def apply(self, kind: str, event_type: str, obj: dict) -> tuple[str | None, bool]:
        """Record one watch event. Returns (namespace it touched, whether that namespace is now gone).

        Raises rollout.Malformed for an object it cannot make sense of.
        """
        namespace, name, summary = rollout.summarize(kind, obj)
        deleted = event_type == "DELETED"
        if kind == "Namespace":
            if deleted:
                self.namespaces.pop(name, None)
                self.objects.pop(name, None)
                return name, True
            self.namespaces[name] = summary
            return name, False
        if kind == "Event" and namespace not in self.namespaces:
            return None, False  # events are not label-selected: keep only those of our namespaces
        if deleted and namespace not in self.objects:
            return None, False
        self.objects[namespace].put(kind, name, None if deleted else summary)
        return namespace, False

    def replace(self, kind: str, items: list[dict]) -> tuple[set[str], set[str]]:
        """A fresh list of one kind replaces what was known. Returns (namespaces touched, namespaces gone)."""
        touched: set[str] = set()
        gone: set[str] = set()
        if kind == "Namespace":
            before = set(self.namespaces)
            self.namespaces = {}
        else:
            for namespace, objects in self.objects.items():
                if objects.forget_kind(kind):
                    touched.add(namespace)
        for obj in items:
            try:
                namespace, _ = self.apply(kind, "ADDED", obj)
            except rollout.Malformed as exc:
                logger.warning("skipped a %s the watcher cannot read: %s", kind, exc)
                continue
            if namespace:
                touched.add(namespace)
        if kind == "Namespace":
            gone = before - set(self.namespaces)
            for name in gone:
                self.objects.pop(name, None)
        return touched, gone


@dataclass(frozen=True)
class RollingOut:
    """A preview whose applied generation the watcher is waiting on."""

    preview_id: int
    generation: int
    applied_at: datetime
    rollout: dict[str, int]


class Watcher:
    """The loop. `start()` opens the watches; `step()` processes what arrived; `run()` does both until stopped."""

    def __init__(self, *, fail_fast: float | None = None, timeout: float | None = None,
                 watch_timeout: int = 300) -> None:
        self.fail_fast = settings.PREVIEWS_FAIL_FAST_SECONDS if fail_fast is None else fail_fast
        self.timeout = settings.PREVIEWS_ROLLOUT_TIMEOUT if timeout is None else timeout
        self.watch_timeout = watch_timeout
        self.cache = ClusterCache()
        self.gateway = policy.gateway()  # the Gateway whose acceptance of our routes readiness may wait for
        self.holder = f"{socket.gethostname()}:{os.getpid()}"
        self.started_at = timezone.now()
        self._queue: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._synced: dict[str, threading.Event] = {k.kind: threading.Event() for k in kube_watch.WATCHED_KINDS}
        self._connected: dict[str, bool] = {k.kind: False for k in kube_watch.WATCHED_KINDS}
        self._problem = ""
        self._rolling_out: dict[str, RollingOut] = {}
        self._failing_since: dict[tuple[str, int], float] = {}
        self._deferred: set[str] = set()
        self._last_refresh = 0.0
        self._last_timers = 0.0
        self._last_heartbeat = 0.0
        self._last_recover = 0.0
        self._last_event_at: datetime | None = None
        self._events_seen = 0
        self.is_leader = False

    # --- the watches (one thread per kind; they only read the API and fill the queue) ------------

    def start(self) -> None:
        for kind in kube_watch.WATCHED_KINDS:
            thread = threading.Thread(target=self._follow, args=(kind,), name=f"watch-{kind.kind}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()

    @property
    def connected(self) -> bool:
        return all(self._connected.values())

    @property
    def synced(self) -> bool:
        return all(e.is_set() for e in self._synced.values())

    def _follow(self, kind: kube_watch.WatchedKind) -> None:
        if kind.kind == "Event":
            # Events are kept only for namespaces we know, so know them first.
            while not self._synced["Namespace"].wait(1):
                if self._stop.is_set():
                    return
        version = ""
        backoff = 0.5
        absent = False
        while not self._stop.is_set():
            try:
                if not version:
                    listed_at = timezone.now()
                    try:
                        items, version = kube_watch.list_objects(kind)
                    except kube_watch.KindAbsent:
                        # Nothing of it can exist: listed and empty, so the watcher is synced without it.
                        if not absent:
                            logger.info("the cluster does not serve %s; not watching it (looking again every "
                                        "%.0fs)", kind.kind, ABSENT_RETRY_SECONDS)
                            self._queue.put(("sync", kind.kind, [], listed_at))
                        absent = True
                        self._connected[kind.kind] = True
                        self._stop.wait(ABSENT_RETRY_SECONDS)
                        continue
                    if absent:
                        logger.info("the cluster serves %s now; watching it", kind.kind)
                        absent = False
                    self._queue.put(("sync", kind.kind, items, listed_at))
                    self._connected[kind.kind] = True
                for event in kube_watch.watch_objects(kind, version, self.watch_timeout):
                    self._connected[kind.kind] = True
                    if event.resource_version:
                        version = event.resource_version
                    if event.type != "BOOKMARK":
                        self._queue.put(("event", kind.kind, event.type, event.object))
                    if self._stop.is_set():
                        return
                backoff = 0.5
            except kube_watch.WatchExpired:
                logger.info("watch %s: resource version %s expired; listing again", kind.kind, version)
                version = ""
            except kube_watch.KindAbsent:
                # Its CRD went away while we watched: list again, which finds it absent.
                version = ""
            except errors.GatewayError as exc:
                if self._connected[kind.kind]:
                    logger.warning("watch %s: %s; reconnecting", kind.kind, exc)
                self._connected[kind.kind] = False
                self._problem = str(exc)[:500]
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 15)
            except Exception:
                logger.exception("watch %s failed; starting it again", kind.kind)
                version = ""
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 15)

    # --- the loop (the only place that touches the database) ----------------------------------------

    def step(self, wait: float = 0.5) -> None:
        """Process what the watches delivered, then check rolling-out previews whose clock ran."""
        dirty: set[str] = set()
        gone: set[str] = set()
        try:
            item = self._queue.get(timeout=wait)
        except queue.Empty:
            item = None
        count = 0
        while item is not None and count < MAX_BATCH:
            count += 1
            self._handle(item, dirty, gone)
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                item = None
        for namespace in sorted(gone):
            outcome = services.preview_namespace_gone(namespace=namespace)
            if outcome in (services.NamespaceGone.DELETED, services.NamespaceGone.DEPLOY_RESUMED):
                logger.info("namespace %s is gone: %s", namespace, outcome)
        now = time.monotonic()
        if now - self._last_refresh >= REFRESH_SECONDS:
            self._last_refresh = now
            dirty |= self._refresh_rolling_out()
        if now - self._last_timers >= 1.0:
            self._last_timers = now
            dirty |= {ns for (ns, _gen) in self._failing_since} | {
                ns for ns, r in self._rolling_out.items() if self._deadline_passed(r)}
        if not self.synced:
            # The picture is incomplete after a (re)start: decide nothing until every kind is listed.
            self._deferred |= dirty
        else:
            for namespace in sorted(dirty | self._deferred):
                self._assess(namespace)
            self._deferred.clear()
        if now - self._last_heartbeat >= HEARTBEAT_SECONDS:
            self._last_heartbeat = now
            self.heartbeat()
        if now - self._last_recover >= RECOVER_SECONDS:
            self._last_recover = now
            recovered = sweep.recover()
            if any(recovered.values()):
                logger.info("recovery: %s", recovered)

    def _handle(self, item: tuple, dirty: set[str], gone: set[str]) -> None:
        if item[0] == "sync":
            _, kind, items, listed_at = item
            touched, vanished = self.cache.replace(kind, items)
            dirty |= touched
            gone |= vanished
            self._synced[kind].set()
            if kind == "Namespace":
                # Deletions finished while nobody watched: a fresh list is the truth, but only about deletes
                # issued before it was taken. A namespace created after the list (and deleted since) is not in
                # it, and is still terminating: its own watch events, queued behind this list, say when it is gone.
                gone |= set(Preview.objects.filter(desired=Preview.Desired.DOWN, status=Preview.Status.DELETING,
                                                   updated_at__lt=listed_at)
                            .exclude(namespace__in=list(self.cache.namespaces)).values_list("namespace", flat=True))
            logger.info("listed %d %s objects", len(items), kind)
            return
        _, kind, event_type, obj = item
        self._events_seen += 1
        self._last_event_at = timezone.now()
        try:
            namespace, is_gone = self.cache.apply(kind, event_type, obj)
        except rollout.Malformed as exc:
            name = (obj.get("metadata") or {}).get("name") if isinstance(obj.get("metadata"), dict) else None
            logger.warning("skipped a %s the watcher cannot read (%s): %s", kind, name, exc)
            return
        if namespace is None:
            return
        if is_gone:
            gone.add(namespace)
        else:
            dirty.add(namespace)

    def _refresh_rolling_out(self) -> set[str]:
        """Which previews are rolling out an applied generation; returns the namespaces new to the list."""
        rows = Preview.objects.filter(status=Preview.Status.DEPLOYING, desired=Preview.Desired.UP,
                                      applied_generation=F("generation"), applied_at__isnull=False).values_list(
            "id", "namespace", "generation", "applied_at", "rollout")
        fresh = {ns: RollingOut(pk, gen, applied_at, plan or {}) for pk, ns, gen, applied_at, plan in rows}
        new = {ns for ns, r in fresh.items() if self._rolling_out.get(ns) != r}
        self._rolling_out = fresh
        self._failing_since = {k: v for k, v in self._failing_since.items()
                               if k[0] in fresh and fresh[k[0]].generation == k[1]}
        return new

    def _deadline_passed(self, r: RollingOut) -> bool:
        return timezone.now() >= r.applied_at + timedelta(seconds=self.timeout)

    def _assess(self, namespace: str) -> None:
        r = self._rolling_out.get(namespace)
        if r is None:
            return
        verdict = rollout.assess(r.rollout, self.cache.objects.get(namespace) or rollout.NamespaceObjects(),
                                 self.gateway)
        key = (namespace, r.generation)
        if verdict.state == rollout.State.READY:
            done = services.preview_rollout_finished(preview_id=r.preview_id, generation=r.generation, ready=True)
        elif verdict.state == rollout.State.FAILING:
            since = self._failing_since.setdefault(key, time.monotonic())
            if time.monotonic() - since >= self.fail_fast:
                done = services.preview_rollout_finished(
                    preview_id=r.preview_id, generation=r.generation, ready=False,
                    message=self._with_logs(namespace, rollout.failure_message(verdict, self.fail_fast), verdict),
                    pending=verdict.pending)
            elif self._deadline_passed(r):
                done = self._time_out(namespace, r, verdict)
            else:
                return
        else:
            self._failing_since.pop(key, None)
            if not self._deadline_passed(r):
                return
            done = self._time_out(namespace, r, verdict)
        self._rolling_out.pop(namespace, None)
        self._failing_since.pop(key, None)
        logger.info("preview %s generation %s in %s: %s%s", r.preview_id, r.generation, namespace, verdict.state,
                    "" if done else " (already changed; nothing recorded)")

    def _time_out(self, namespace: str, r: RollingOut, verdict: rollout.Verdict) -> bool:
        message = rollout.timeout_message(verdict, self.timeout)
        return services.preview_rollout_finished(preview_id=r.preview_id, generation=r.generation, ready=False,
                                                 message=self._with_logs(namespace, message, verdict),
                                                 pending=verdict.pending)

    @staticmethod
    def _with_logs(namespace: str, message: str, verdict: rollout.Verdict) -> str:
        """The failure in the containers' own words: one bounded log read per container that explains it
        (at most rollout.MAX_LOG_SOURCES, each within kube_view.LOG_TIMEOUT); a log that cannot be read is
        said so, and the failure is recorded all the same."""
        tails = []
        for source in verdict.logs:
            try:
                text = kube_view.container_log(namespace, source.pod, source.container, previous=source.previous,
                                               lines=rollout.MAX_LOG_TAIL_LINES)
            except errors.GatewayError as exc:
                text = f"(its log could not be read: {exc})"
            tails.append((source, text))
        return rollout.with_logs(message, tails)

    def heartbeat(self) -> None:
        now = timezone.now()
        detail = "" if self.connected else (self._problem or "connecting")
        WatcherStatus.objects.update_or_create(holder=self.holder, defaults={
            "is_leader": self.is_leader, "connected": self.connected, "started_at": self.started_at,
            "heartbeat_at": now, "last_event_at": self._last_event_at, "events_seen": self._events_seen,
            "backlog": self._queue.qsize(), "synced_kinds": sorted(k for k, e in self._synced.items() if e.is_set()),
            "detail": detail})
        heartbeat.touch(settings.PREVIEWS_HEARTBEAT_FILE)  # the exec probe's file: alive and reaching the database

    # --- leadership and the whole process ------------------------------------------------------------

    def try_lead(self) -> bool:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", list(LEADER_LOCK))
            self.is_leader = bool(cursor.fetchone()[0])
        if self.is_leader:
            locks.pin_session()  # the lock is this session's: it must not be closed for its age underneath
        return self.is_leader

    def resign(self) -> None:
        if self.is_leader:
            # If the session is gone, the lock went with it.
            with contextlib.suppress(DatabaseError), connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s, %s)", list(LEADER_LOCK))
        self.is_leader = False

    def run(self, stop: threading.Event) -> None:
        """Lead (or stand by until this process can), watch, and process until `stop` is set."""
        announced = False
        while not stop.is_set():
            try:
                if not self.is_leader:
                    if not self.try_lead():
                        if not announced:
                            logger.info("another watcher leads; %s stands by", self.holder)
                            announced = True
                        self.heartbeat()
                        stop.wait(HEARTBEAT_SECONDS)
                        continue
                    logger.info("%s leads; watching the cluster", self.holder)
                    if not self._threads:
                        self.start()
                self.step()
            except (DatabaseError, InterfaceError) as exc:
                # The leader's lock lives in the database session: after losing it, lead again first.
                logger.warning("database error (%s); reconnecting", exc)
                self.is_leader = False
                # A batch being processed may have been lost with the error: every rollout is assessed again.
                self._rolling_out = {}
                connection.close()
                stop.wait(1)
        self.stop()
        self.resign()
        with contextlib.suppress(DatabaseError):
            WatcherStatus.objects.filter(holder=self.holder).update(is_leader=False, connected=False,
                                                                     heartbeat_at=timezone.now(), detail="stopped")

