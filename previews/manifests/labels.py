"""The labels, names and routing modes that mark what the service owns: tiny, so the gateways can import it."""

from __future__ import annotations

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "pr-previews"
# Namespaces never created, adopted or deleted, whatever a label says (PREVIEWS_PROTECTED_NAMESPACES adds more).
PROTECTED_NAMESPACES = frozenset({"default", "kube-system", "kube-public", "kube-node-lease", "staging"})
REPOSITORY_LABEL = "previews.dev/repository-id"
PR_LABEL = "previews.dev/pr"
# On every pod template: the commit deployed, for the app to read through the downward API.
HEAD_SHA_ANNOTATION = "previews.dev/head-sha"
FIELD_MANAGER = "pr-previews"
# Write this as an Ingress host in a template; it becomes the preview's own host.
HOST_PLACEHOLDER = "PREVIEW_HOST"
GENERATED_INGRESS_NAME = "preview"
GENERATED_ROUTE_NAME = "preview"
# How a preview is reached: an Ingress, or a Gateway API HTTPRoute attached to one configured Gateway.
ROUTING_INGRESS = "ingress"
ROUTING_GATEWAY = "gateway"
ROUTING_MODES = (ROUTING_INGRESS, ROUTING_GATEWAY)
GATEWAY_GROUP = "gateway.networking.k8s.io"
GATEWAY_API_VERSION = f"{GATEWAY_GROUP}/v1"
# The route kinds of gateway routing: each is watched for its status and pruned like any allowed kind.
ROUTE_KINDS = ("HTTPRoute",)
# The kinds whose rollout a deploy waits for (at the generation its apply produced).
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "Job")
# What the service renders for a preview's data (previews/data.py uses the same names): a bundle may not define
# them, or the deploy would find two owners for one object.
DATA_SECRET_NAME = "preview-database"
DATA_POSTGRES_NAME = "preview-postgres"
DATA_MIGRATE_JOB_PREFIX = "preview-migrate"
