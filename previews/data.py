"""A preview's data: what a deploy ensures, what a reset recreates, what a teardown drops.

Per repository, a data mode:

- ``none``: nothing (the default);
- ``schema``: a role and a schema of its own on the shared server (previews/gateways/preview_db.py);
- ``database``: a role and a database of its own, copied from the repository's template database;
- ``in-namespace``: a Postgres StatefulSet (with its volume), Service and Secret rendered into the
  preview's namespace.

Every mode gives the namespace a Secret ``preview-database`` with ``DATABASE_URL`` and the libpq
``PG*`` variables, and, when the repository has a migrate command, a Job running it with the PR's
image; the Job is part of the rollout, so the preview is ready only once it completed, and its
failure fails the preview.

*The password* is never stored: it is derived, HMAC-SHA256 over a random per-preview salt keyed
with SECRET_KEY. Every deploy can therefore write the same password into the Secret and the
role again (no rotation under running pods), and a leaked table row reveals nothing. Rotating
SECRET_KEY rotates every preview's password at its next deploy.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import secrets
from dataclasses import dataclass

from django.conf import settings

from previews import manifests, services
from previews.gateways import preview_db
from previews.models import DataMode, Preview

SECRET_NAME = "preview-database"
MIGRATE_JOB_PREFIX = "preview-migrate"
POSTGRES_NAME = "preview-postgres"
POSTGRES_PORT = 5432
IN_NAMESPACE_DATABASE = "app"
IN_NAMESPACE_USER = "app"
SHARED_MODES = (DataMode.SCHEMA, DataMode.DATABASE)


class DataConfigError(preview_db.DataError):
    """The repository's data settings cannot be carried out (no template, no image for the migrate Job...)."""


def new_salt() -> str:
    return secrets.token_hex(16)


def password_for(preview: Preview) -> str:
    """The preview's data password, derived from SECRET_KEY and its salt (43 URL-safe characters)."""
    if not preview.data_salt:
        raise DataConfigError(f"{preview} has no data salt yet")
    digest = hmac.new(settings.SECRET_KEY.encode(), f"preview-data-password:{preview.data_salt}".encode(),
                      hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def owner_of(preview: Preview) -> preview_db.Owner:
    return preview_db.Owner(preview.repository_id, preview.repository.full_name, preview.pr_number)


def name_for(preview: Preview) -> str:
    return preview_db.object_name(preview.repository_id, preview.repository.full_name, preview.pr_number)


def spec_for(preview: Preview, mode: str | None = None) -> preview_db.Spec:
    """The shared-server spec of the preview's data in `mode` (default: its repository's mode)."""
    repository = preview.repository
    mode = mode or repository.data_mode
    if mode not in SHARED_MODES:
        raise DataConfigError(f"data mode {mode!r} does not live on the shared server")
    if mode == DataMode.DATABASE and not repository.data_template:
        raise DataConfigError(f"{repository} uses the database data mode but names no template database")
    return preview_db.Spec(mode=mode, name=preview.data_name or name_for(preview), owner=owner_of(preview),
                           template=repository.data_template if mode == DataMode.DATABASE else "",
                           connection_limit=repository.data_connection_limit)


# --- rendering (pure) -------------------------------------------------------------------------


def _meta(name: str, ctx: manifests.RenderContext) -> dict:
    return {"name": name, "namespace": ctx.namespace, "labels": dict(ctx.labels)}


def secret_object(ctx: manifests.RenderContext, env: dict[str, str]) -> dict:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": _meta(SECRET_NAME, ctx), "type": "Opaque",
            "stringData": dict(env)}


def migrate_image(preview: Preview) -> str:
    """The PR's image, which the migrate Job runs: the repository's image override, or the only image sent."""
    images = dict(preview.images)
    name = preview.repository.image_name
    if name and name in images:
        return images[name]
    if len(images) == 1:
        return next(iter(images.values()))
    raise DataConfigError(f"{preview.repository} has a migrate command, but which of the PR's images runs it is "
                          f"unclear: set the repository's image name to one of {sorted(images) or 'its images'}")


def migrate_job(ctx: manifests.RenderContext, generation: int, image: str, command: str,
                database_image: str = "") -> dict:
    """The migrate (or seed) Job of one generation: a new name each deploy, so it runs again with the new
    image; the deploy's prune removes the previous one. No retries: a failed migration fails the preview.
    With `database_image` (the in-namespace database, which starts with the Job) it first waits, in an init
    container of that image, until the database accepts connections."""
    job = {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": _meta(f"{MIGRATE_JOB_PREFIX}-{generation}", ctx),
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": dict(ctx.labels)},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "containers": [{
                        "name": "migrate", "image": image, "command": ["/bin/sh", "-c", command],
                        "envFrom": [{"secretRef": {"name": SECRET_NAME}}],
                    }],
                },
            },
        },
    }
    if database_image:
        job["spec"]["template"]["spec"]["initContainers"] = [{
            "name": "wait-for-database", "image": database_image,
            "command": ["/bin/sh", "-c", 'until pg_isready -q -h "$PGHOST" -p "$PGPORT"; do sleep 1; done'],
            "envFrom": [{"secretRef": {"name": SECRET_NAME}}],
        }]
    return job


def in_namespace_env(ctx: manifests.RenderContext, password: str) -> dict[str, str]:
    host = f"{POSTGRES_NAME}.{ctx.namespace}.svc"
    return {"DATABASE_URL": f"postgres://{IN_NAMESPACE_USER}:{password}@{host}:{POSTGRES_PORT}/"
                            f"{IN_NAMESPACE_DATABASE}",
            "PGHOST": host, "PGPORT": str(POSTGRES_PORT), "PGDATABASE": IN_NAMESPACE_DATABASE,
            "PGUSER": IN_NAMESPACE_USER, "PGPASSWORD": password,
            # What the postgres image reads to initialise its cluster.
            "POSTGRES_USER": IN_NAMESPACE_USER, "POSTGRES_PASSWORD": password, "POSTGRES_DB": IN_NAMESPACE_DATABASE}


def in_namespace_objects(ctx: manifests.RenderContext, image: str, storage: str) -> list[dict]:
    """A single-replica Postgres StatefulSet with its volume claim, and its Service."""
    selector = {"app.kubernetes.io/name": POSTGRES_NAME}
    labels = {**ctx.labels, **selector}
    return [
        {"apiVersion": "v1", "kind": "Service", "metadata": {**_meta(POSTGRES_NAME, ctx), "labels": labels},
         "spec": {"type": "ClusterIP", "selector": selector,
                  "ports": [{"name": "postgres", "port": POSTGRES_PORT, "targetPort": POSTGRES_PORT}]}},
        {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {**_meta(POSTGRES_NAME, ctx), "labels": labels},
         "spec": {
             "serviceName": POSTGRES_NAME, "replicas": 1, "selector": {"matchLabels": selector},
             "template": {
                 "metadata": {"labels": labels},
                 "spec": {
                     "automountServiceAccountToken": False,
                     "containers": [{
                         "name": "postgres", "image": image,
                         "ports": [{"name": "postgres", "containerPort": POSTGRES_PORT}],
                         "envFrom": [{"secretRef": {"name": SECRET_NAME}}],
                         "env": [{"name": "PGDATA", "value": "/var/lib/postgresql/data/pgdata"}],
                         # Asked on loopback: through its Service (PGHOST) it answers only once it is ready.
                         "readinessProbe": {"exec": {"command": ["pg_isready", "-h", "127.0.0.1", "-U",
                                                                 IN_NAMESPACE_USER]},
                                            "periodSeconds": 5},
                         "volumeMounts": [{"name": "data", "mountPath": "/var/lib/postgresql/data"}],
                     }],
                 },
             },
             "volumeClaimTemplates": [{
                 "metadata": {"name": "data", "labels": dict(ctx.labels)},
                 "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": storage}}},
             }],
         }},
    ]


def checked(objects: list[dict], ctx: manifests.RenderContext) -> list[dict]:
    """The objects the service renders itself pass the same policy as a repository's manifests."""
    problems = manifests.validate(objects, ctx)
    if problems:
        raise manifests.ManifestError(problems)
    return [manifests.place(obj, ctx) for obj in objects]


def egress(mode: str) -> tuple[str, int] | None:
    """(CIDR, port) the preview's NetworkPolicy must let pods reach for a shared-server mode, else None."""
    if mode not in SHARED_MODES or not preview_db.is_configured():
        return None
    host, port = preview_db.pod_address()
    return egress_cidr(host, settings.PREVIEWS_DATA_EGRESS_CIDR), port


def egress_cidr(host: str, configured: str) -> str:
    """The CIDR a preview's pods may reach the data server at. Pure.

    PREVIEWS_DATA_EGRESS_CIDR when set (checked to be a network), else the host's own address when it is an IP.
    A host *name* without the setting is refused (DataConfigError), never opened to every address: resolving it
    here once would pin whatever address it had then (a managed server's failover moves it) and what this
    process resolves need not be what the preview's pods do."""
    if configured:
        try:
            return str(ipaddress.ip_network(configured.strip(), strict=False))
        except ValueError:
            raise DataConfigError(f"PREVIEWS_DATA_EGRESS_CIDR {configured[:60]!r} is not a network "
                                  "(e.g. 10.20.0.0/16)") from None
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise DataConfigError(f"the data server is given as the host name {host[:100]!r}: set "
                              "PREVIEWS_DATA_EGRESS_CIDR to the network its addresses are in, so previews' pods "
                              "may reach it and nothing else on its port") from None
    return f"{address}/{address.max_prefixlen}"


# --- what a deploy does --------------------------------------------------------------------------


@dataclass(frozen=True)
class DeployData:
    objects: list[dict]  # the Secret, the in-namespace database, the migrate Job: applied with the manifests
    database: str  # what the dashboard shows: "pv12_acme_shop_pr7", or "in-namespace"
    reset: bool  # the data was reset first
    steps: list[str]
    size_bytes: int | None = None


def prepare(preview: Preview, ctx: manifests.RenderContext, generation: int) -> DeployData | None:
    """Ensure (or, for a reset generation, recreate) the preview's data and render what goes with it.

    Raises preview_db.DataError (DataUnavailable when the server cannot be reached). None for mode none.
    """
    repository = preview.repository
    mode = repository.data_mode
    if mode == DataMode.NONE and not preview.data_mode:
        return None
    steps: list[str] = []
    if preview.data_mode and preview.data_mode != mode:
        # The repository changed its mode: the preview's old data goes first.
        steps += drop(preview)
    if mode == DataMode.NONE:
        return DeployData([], "", False, steps)
    if not preview.data_salt:
        preview.data_salt = services.preview_data_salted(preview_id=preview.pk, salt=new_salt())
    password = password_for(preview)
    reset = preview.data_reset_generation == generation
    objects: list[dict] = []
    size: int | None = None
    if mode == DataMode.IN_NAMESPACE:
        services.preview_data_named(preview_id=preview.pk, mode=mode, name=IN_NAMESPACE_DATABASE)
        objects += [secret_object(ctx, in_namespace_env(ctx, password)),
                    *in_namespace_objects(ctx, repository.data_image, repository.data_storage)]
        database = IN_NAMESPACE_DATABASE
    else:
        spec = spec_for(preview, mode)
        # Recorded before anything is created, so a teardown after a crash knows what to drop.
        services.preview_data_named(preview_id=preview.pk, mode=mode, name=spec.name)
        preview.data_mode, preview.data_name = mode, spec.name
        if reset:
            ensured = preview_db.reset(spec, password)
            steps.append(f"{mode} {spec.name} reset")
        else:
            ensured = preview_db.ensure(spec, password)
            if ensured.created:
                steps.append(f"{mode} {spec.name} created")
        size = ensured.size_bytes
        connect_to = spec.name if mode == DataMode.DATABASE else preview_db.shared_database()
        objects.append(secret_object(ctx, preview_db.connection_env(spec, password, connect_to)))
        database = spec.name
    if repository.data_migrate_command.strip():
        objects.append(migrate_job(ctx, generation, migrate_image(preview), repository.data_migrate_command,
                                   repository.data_image if mode == DataMode.IN_NAMESPACE else ""))
    return DeployData(checked(objects, ctx), database, reset, steps, size)


def drop(preview: Preview) -> list[str]:
    """Drop the preview's data on the shared server (nothing for in-namespace: it goes with the namespace).

    Idempotent; refuses (NotOurs) anything not marked as this preview's.
    """
    if preview.data_mode not in SHARED_MODES or not preview.data_name:
        return []
    steps = preview_db.drop(preview.data_mode, preview.data_name, owner_of(preview))
    services.preview_data_dropped(preview_id=preview.pk)
    preview.data_mode = preview.data_name = ""
    return steps
