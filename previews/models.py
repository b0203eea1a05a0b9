"""The domain: repositories, their API tokens, previews and the event timeline.

Invariants live in the database as constraints, not only in forms, so nothing
that bypasses validation can store a preview the cluster could not hold.
"""

from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator
from django.db import models
from django.db.models import Q
from django.db.models.functions import Length

from previews import optin, validators
from previews.manifests.labels import ROUTING_GATEWAY, ROUTING_INGRESS

models.CharField.register_lookup(Length)

# Preview.github_synced_key after a failed sync: the reaper retries these every cycle.
GITHUB_SYNC_FAILED = "failed"


class DataMode(models.TextChoices):
    NONE = "none"
    SCHEMA = "schema", "schema per preview on the shared server"
    DATABASE = "database", "database per preview, copied from a template"
    IN_NAMESPACE = "in-namespace", "Postgres in the preview's namespace"


class Routing(models.TextChoices):
    """How a repository's previews are reached (the strings are the manifests' routing modes)."""

    DEFAULT = "", "the service's default (PREVIEWS_ROUTING)"
    INGRESS = ROUTING_INGRESS, "an Ingress per preview"
    GATEWAY = ROUTING_GATEWAY, "a Gateway API HTTPRoute per preview"


class OptIn(models.TextChoices):
    """Which pull requests get a preview (the strings are previews/optin.py's modes)."""

    ALL = optin.ALL, "every pull request"
    LABEL = optin.LABEL, "pull requests with the opt-in label"


class PodSecurity(models.TextChoices):
    BASELINE = "baseline", "baseline"
    RESTRICTED = "restricted", "restricted"


class Repository(models.Model):
    DataMode = DataMode

    owner = models.CharField(max_length=39, validators=[validators.validate_owner])
    name = models.CharField(max_length=100, validators=[validators.validate_repo_name])
    base_domain = models.CharField(
        max_length=200, help_text="Previews are served at <prefix>-<N>.<base domain>."
    )
    namespace_prefix = models.CharField(max_length=40, default="pr", validators=[validators.validate_prefix])
    manifest_template = models.TextField(
        blank=True, help_text="Multi-document YAML applied to each preview, unless CI sends its own."
    )
    image_name = models.CharField(
        max_length=300, blank=True,
        help_text="Which of a PR's images runs the data migrate command when CI sends several, e.g. "
                  "ghcr.io/acme/shop (the manifests' images are replaced by name, whatever this says).",
    )
    image_template = models.CharField(
        max_length=300,
        blank=True,
        help_text="For webhook-driven deploys, e.g. ghcr.io/acme/shop:pr-{number}-{sha}.",
    )
    service_name = models.CharField(max_length=63, default="web",
                                    help_text="The Service the generated Ingress or HTTPRoute routes to.")
    service_port = models.PositiveIntegerField(default=80)
    tls_secret_name = models.CharField(max_length=253, blank=True)
    routing = models.CharField(
        max_length=8, blank=True, default=Routing.DEFAULT, choices=Routing.choices,
        help_text="How previews are reached. A change applies to each live preview at its next deploy, which "
                  "replaces its Ingress by an HTTPRoute (or back).",
    )
    default_ttl_hours = models.PositiveIntegerField(
        default=72, validators=[MaxValueValidator(validators.MAX_TTL_HOURS)])
    max_ttl_hours = models.PositiveIntegerField(
        default=24 * 14, validators=[MaxValueValidator(validators.MAX_TTL_HOURS)])
    max_live_previews = models.PositiveIntegerField(default=20)
    quota_cpu = models.CharField(max_length=20, default="2")
    quota_memory = models.CharField(max_length=20, default="4Gi")
    quota_pods = models.PositiveIntegerField(default=20)
    # Who gets a preview (previews/optin.py) and who may command it from the PR (previews/commands.py).
    opt_in = models.CharField(
        max_length=8, choices=OptIn.choices, default=OptIn.ALL, help_text="Which pull requests get a preview.")
    opt_in_label = models.CharField(max_length=50, default="preview",
                                    help_text="The label that opts a pull request in (when opt-in is by label).")
    preview_drafts = models.BooleanField(default=False, help_text="Draft pull requests get previews too.")
    command_associations = models.CharField(
        max_length=200, default="OWNER,MEMBER,COLLABORATOR", validators=[validators.validate_associations],
        help_text="Comma-separated GitHub author associations whose /preview commands are obeyed.")
    sleep_after_hours = models.PositiveIntegerField(
        default=8, help_text="Scale an idle preview to zero after this many hours without a deploy, wake, "
                             "extension or command (0: never).")
    # GitHub Actions OIDC: a token is mapped to this repository by these immutable ids, never by name.
    github_repository_id = models.BigIntegerField(
        null=True, blank=True, unique=True,
        help_text="GitHub's id of the repository (the OIDC claim repository_id). Empty: OIDC tokens are refused.",
    )
    github_owner_id = models.BigIntegerField(
        null=True, blank=True, help_text="GitHub's id of the owner (the OIDC claim repository_owner_id).",
    )
    oidc_workflow_refs = models.TextField(
        blank=True,
        help_text="Optional: workflows allowed to act (one a line), matched whole: "
                  "acme/ci/.github/workflows/preview.yml@refs/heads/main, or a workflow file without @ for any "
                  "ref. Empty: any workflow of the repository.",
    )
    oidc_environment = models.CharField(
        max_length=255, blank=True, help_text="Optional: the GitHub environment the job must run in."
    )
    quota_storage = models.CharField(max_length=20, default="10Gi", help_text="All PVC storage requests together.")
    quota_pvcs = models.PositiveIntegerField(default=5, help_text="PersistentVolumeClaims at most.")
    quota_ephemeral_storage = models.CharField(max_length=20, default="8Gi",
                                               help_text="Container scratch space and emptyDirs together.")
    pod_security = models.CharField(
        max_length=12, choices=PodSecurity.choices, default=PodSecurity.BASELINE,
        help_text="The Pod Security Standard enforced in the preview namespaces; restricted is checked up front.",
    )
    node_selector = models.CharField(
        max_length=500, blank=True, validators=[validators.validate_node_selector],
        help_text="Node labels every pod of a preview must run on, as key=value,... (set by the service, never by "
                  "the PR's manifests; e.g. previews.local/node=real for the local cluster's real node).")
    tolerations = models.CharField(
        max_length=500, blank=True, validators=[validators.validate_tolerations],
        help_text="Node taints every pod of a preview tolerates, as key:Effect,... (e.g. "
                  "previews.local/real-node:NoSchedule).")
    storage_classes = models.CharField(
        max_length=500, blank=True, validators=[validators.validate_storage_classes],
        help_text="Comma-separated storage classes a PVC may name; empty: only the cluster default.",
    )
    # What a preview's pods may reach beyond the cluster (docs/manifest-policy.md): nothing, unless set here.
    token_audiences = models.CharField(
        max_length=500, blank=True, validators=[validators.validate_token_audiences],
        help_text="Comma-separated audiences a projected service-account token may name (an STS, Vault or a "
                  "workload-identity pool accepts such a token as the pod's identity); empty: none.")
    annotation_domains = models.CharField(
        max_length=500, blank=True, validators=[validators.validate_annotation_domains],
        help_text="Comma-separated annotation domains the manifests may use beyond the plain ones, e.g. "
                  "eks.amazonaws.com (IRSA), iam.gke.io, azure.workload.identity, vault.hashicorp.com, "
                  "karpenter.sh; empty: none (each gives pods a cloud or secret-store identity or changes what a "
                  "controller does).")
    allow_cached_images = models.BooleanField(
        default=False,
        help_text="Keep the manifests' imagePullPolicy. Off: every container pulls (Always), so that an image "
                  "cached on the node for another tenant never runs without this repository's credentials.")
    manifest_puts_per_minute = models.PositiveIntegerField(
        default=30, validators=[MaxValueValidator(10_000)],
        help_text="PUTs carrying manifests accepted per minute (each is parsed and checked on the web server); "
                  "more are answered 429 with Retry-After. 0: no limit.")
    # The fixed one-minute window of that limit, counted in one UPDATE (services.manifest_check_admitted).
    manifest_window_start = models.DateTimeField(null=True, blank=True, editable=False)
    manifest_window_count = models.PositiveIntegerField(default=0, editable=False)
    allow_fork_previews = models.BooleanField(
        default=False,
        help_text="Deploy pull requests from forks on webhook events, for authors GitHub marks as owner, member "
                  "or collaborator only.",
    )
    webhook_secret = models.CharField(
        max_length=200, blank=True,
        help_text="This repository's own GitHub webhook secret; empty: GITHUB_WEBHOOK_SECRET.",
    )
    # Preview data (previews/data.py): what each preview gets besides its manifests.
    data_mode = models.CharField(max_length=16, choices=DataMode.choices, default=DataMode.NONE)
    data_template = models.CharField(
        max_length=63, blank=True, validators=[validators.validate_pg_identifier],
        help_text="database mode: the template database on the shared server that each preview copies.")
    data_migrate_command = models.TextField(
        blank=True, help_text="Run with /bin/sh -c in a Job with the PR's image (and the preview-database Secret) "
                              "before the preview counts as ready, e.g. `python manage.py migrate`.")
    data_connection_limit = models.PositiveIntegerField(default=10,
                                                        help_text="CONNECTION LIMIT of each preview's role.")
    data_image = models.CharField(max_length=300, default="postgres:15",
                                  help_text="in-namespace mode: the Postgres image.")
    data_storage = models.CharField(max_length=20, default="1Gi", help_text="in-namespace mode: the volume's size.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "repositories"
        ordering = ["owner", "name"]
        constraints = [
            models.UniqueConstraint("owner", "name", name="repository_unique_full_name"),
            models.CheckConstraint(
                condition=Q(owner__regex=r"^[A-Za-z0-9](-?[A-Za-z0-9])*$"), name="repository_owner_valid"
            ),
            models.CheckConstraint(
                condition=Q(name__regex=r"^[A-Za-z0-9._-]+$") & ~Q(name__in=[".", ".."]),
                name="repository_name_valid",
            ),
            models.CheckConstraint(
                condition=Q(namespace_prefix__regex=validators.DNS_LABEL_SQL_RE), name="repository_prefix_dns_label"
            ),
            models.CheckConstraint(condition=Q(default_ttl_hours__gt=0), name="repository_default_ttl_positive"),
            models.CheckConstraint(
                condition=Q(max_ttl_hours__gte=models.F("default_ttl_hours")), name="repository_max_ttl_gte_default"
            ),
            models.CheckConstraint(
                condition=Q(service_port__gte=1, service_port__lte=65535), name="repository_service_port_range"
            ),
            models.CheckConstraint(condition=Q(opt_in__in=OptIn.values), name="repository_opt_in_valid"),
            models.CheckConstraint(
                condition=Q(max_ttl_hours__lte=validators.MAX_TTL_HOURS), name="repository_max_ttl_bounded"
            ),
            models.CheckConstraint(
                condition=Q(pod_security__in=PodSecurity.values), name="repository_pod_security_valid"
            ),
            models.CheckConstraint(condition=Q(data_mode__in=DataMode.values), name="repository_data_mode_valid"),
            models.CheckConstraint(condition=Q(routing__in=Routing.values),
                                   name="repository_routing_valid"),
            models.CheckConstraint(condition=~Q(data_mode="database") | ~Q(data_template=""),
                                   name="repository_database_mode_has_template"),
            models.CheckConstraint(condition=Q(data_connection_limit__gte=1, data_connection_limit__lte=1000),
                                   name="repository_data_connection_limit_range"),
        ]

    def __str__(self) -> str:
        return self.full_name

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"

    @property
    def storage_class_list(self) -> tuple[str, ...]:
        return tuple(name.strip() for name in self.storage_classes.split(",") if name.strip())

    @property
    def token_audience_list(self) -> tuple[str, ...]:
        return tuple(name.strip() for name in self.token_audiences.split(",") if name.strip())

    @property
    def annotation_domain_list(self) -> tuple[str, ...]:
        return tuple(name.strip() for name in self.annotation_domains.split(",") if name.strip())


class ApiToken(models.Model):
    """A bearer token, stored only as a SHA-256 hash of its plaintext.

    The plaintext looks like ``pvw_<prefix>_<secret>``; the prefix is stored in
    clear to find the row, the hash is compared in constant time.
    """

    name = models.CharField(max_length=100)
    repository = models.ForeignKey(
        Repository, null=True, blank=True, on_delete=models.CASCADE, related_name="tokens",
        help_text="Empty for an admin token that may act on every repository.",
    )
    prefix = models.CharField(max_length=12, unique=True, editable=False)
    token_hash = models.CharField(max_length=64, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(token_hash__regex=r"^[0-9a-f]{64}$"), name="apitoken_hash_is_sha256"),
        ]

    def __str__(self) -> str:
        scope = self.repository.full_name if self.repository_id else "admin"
        return f"{self.name} ({scope}, pvw_{self.prefix}_…)"


class DesiredState(models.TextChoices):
    UP = "up"
    DOWN = "down"


class PreviewStatus(models.TextChoices):
    PENDING = "pending"
    DEPLOYING = "deploying"
    READY = "ready"
    FAILED = "failed"
    DELETING = "deleting"
    DELETED = "deleted"
    SLEEPING = "sleeping"


class ActorKind(models.TextChoices):
    USER = "user"
    TOKEN = "token"
    WEBHOOK = "webhook"
    GITHUB = "github"  # a GitHub user, through a /preview comment command
    REAPER = "reaper"
    SYSTEM = "system"
    WORKFLOW = "workflow"  # a GitHub Actions run, authenticated by its OIDC token
    VISITOR = "visitor"  # someone who opened the preview's URL (the asleep page's "wake it up")


class EventAction(models.TextChoices):
    """What a `PreviewEvent` records: the timeline's vocabulary (metrics and the services match these values)."""

    # Requests (by a person, CI, a webhook, a PR command or the reaper)
    CREATED = "created"
    UPDATED = "updated"
    REOPENED = "reopened"
    REDEPLOY_REQUESTED = "redeploy requested"
    DESTROY_REQUESTED = "destroy requested"
    DATA_RESET_REQUESTED = "data reset requested"
    EXTENDED = "extended"
    PINNED = "pinned"
    UNPINNED = "unpinned"
    SLEEP_REQUESTED = "sleep requested"
    WAKE_REQUESTED = "wake requested"
    COMMAND = "command"
    # The reaper
    REAPED = "reaped"
    MARKED_DELETED = "marked deleted"
    EXPIRY_WARNING = "expiry warning"
    NAMESPACE_STUCK = "namespace stuck"
    # The engine: deploy
    DEPLOY_STARTED = "deploy started"
    DEPLOY_WAITING = "deploy waiting"
    DEPLOY_REQUEUED = "deploy requeued"
    DATA_CREATED = "data created"
    DATA_RESET = "data reset"
    APPLIED = "applied"
    PRUNED = "pruned"
    WOKEN = "woken"
    READY = "ready"
    DEPLOY_FAILED = "deploy failed"
    # The engine: sleep and teardown
    SLEPT = "slept"
    SLEEP_FAILED = "sleep failed"
    DATA_DROPPED = "data dropped"
    DATA_DROP_FAILED = "data drop failed"
    DATA_REAPED = "data reaped"
    NAMESPACE_TERMINATING = "namespace terminating"
    DELETE_FAILED = "delete failed"
    DELETED = "deleted"
    # GitHub
    GITHUB_FAILED = "github failed"


class Preview(models.Model):
    Desired = DesiredState
    Status = PreviewStatus

    # Sleeping previews are live: they hold a namespace and count toward the repository's limit.
    LIVE_STATUSES = (Status.PENDING, Status.DEPLOYING, Status.READY, Status.FAILED, Status.DELETING, Status.SLEEPING)

    repository = models.ForeignKey(Repository, on_delete=models.PROTECT, related_name="previews")
    pr_number = models.PositiveIntegerField(validators=[validators.validate_pr_number])
    namespace = models.CharField(max_length=63, unique=True, validators=[validators.validate_dns_label])
    url = models.URLField(max_length=300, blank=True)
    head_sha = models.CharField(max_length=40, validators=[validators.validate_sha])
    # {"ghcr.io/acme/shop": "ghcr.io/acme/shop:pr-42-abc", ...}: image name -> full reference.
    images = models.JSONField(default=dict, blank=True)
    # Manifests CI sent with the request; empty means the repository's template.
    manifests = models.TextField(blank=True)
    desired = models.CharField(max_length=8, choices=Desired.choices, default=Desired.UP)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.PENDING)
    status_message = models.TextField(blank=True)
    generation = models.PositiveIntegerField(default=1)
    # The generation whose deploy or teardown last finished (ready, failed, deleted).
    observed_generation = models.PositiveIntegerField(default=0)
    # The engine's progress for the current generation. A deploy task holds one of its repository's
    # deploy slots from `deploy_queued_at` until it starts; `next_attempt_at` delays a retry after
    # the Kubernetes API was unreachable. Once everything is applied, `applied_generation`,
    # `applied_at` and `rollout` (the workloads to watch, "Kind/name" -> metadata.generation) tell
    # the cluster watcher what "ready" means for this generation.
    deploy_queued_at = models.DateTimeField(null=True, blank=True)
    # Since when the preview has wanted a deploy that is not applied yet (kept across pushes, retries and lost
    # tasks; cleared once applied or ended): its place in its repository's queue, oldest first
    # (`services.deploy_slots_fill`).
    waiting_since = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    deploy_started_at = models.DateTimeField(null=True, blank=True)
    applied_generation = models.PositiveIntegerField(default=0)
    applied_at = models.DateTimeField(null=True, blank=True)
    rollout = models.JSONField(default=dict, blank=True)
    expires_at = models.DateTimeField()
    pinned = models.BooleanField(default=False)
    title = models.CharField(max_length=300, blank=True)
    author = models.CharField(max_length=39, blank=True)
    github_comment_id = models.BigIntegerField(null=True, blank=True)
    github_deployment_id = models.BigIntegerField(null=True, blank=True)
    # What the PR has been told: the deployment's generation and last posted state, and a
    # key of the state the comment and statuses last reflected (empty: never synced).
    github_deployment_generation = models.PositiveIntegerField(null=True, blank=True)
    github_deployment_state = models.CharField(max_length=12, blank=True)
    github_synced_key = models.CharField(max_length=200, blank=True)
    # The expiry the PR was last warned about, so each expiry is announced once.
    expiry_warned_for = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    ready_at = models.DateTimeField(null=True, blank=True)
    deleted_at = models.DateTimeField(null=True, blank=True)
    # Sleep and wake: the idle clock (last deploy request, wake, extension or PR command), when the
    # workloads were confirmed scaled to zero, and the last /preview command with its result (shown on the PR).
    last_activity_at = models.DateTimeField(null=True, blank=True)
    slept_at = models.DateTimeField(null=True, blank=True)
    last_command = models.JSONField(default=dict, blank=True)
    # Preview data. The mode and name it was created with (so it is dropped even after the repository's mode
    # changed); a random salt from which its password is derived (HMAC with SECRET_KEY: the password itself
    # is never stored); the generation whose deploy must reset it first; its size when last measured.
    data_mode = models.CharField(max_length=16, blank=True)
    data_name = models.CharField(max_length=63, blank=True)
    data_salt = models.CharField(max_length=64, blank=True, editable=False)
    data_reset_generation = models.PositiveIntegerField(null=True, blank=True)
    data_reset_at = models.DateTimeField(null=True, blank=True)
    data_size_bytes = models.BigIntegerField(null=True, blank=True)
    data_size_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-updated_at"]
        permissions = [
            ("extend_preview", "Can extend a preview's expiry"),
            ("pin_preview", "Can pin or unpin a preview"),
            ("redeploy_preview", "Can redeploy a preview"),
            ("kill_preview", "Can delete a preview's environment"),
            ("reset_data_preview", "Can reset a preview's data"),
        ]
        constraints = [
            models.UniqueConstraint("repository", "pr_number", name="preview_unique_repository_pr"),
            models.CheckConstraint(
                condition=Q(pr_number__gt=0, pr_number__lte=validators.MAX_PR_NUMBER), name="preview_pr_number_range"
            ),
            models.CheckConstraint(
                condition=Q(namespace__regex=validators.DNS_LABEL_SQL_RE) & Q(namespace__length__lte=63),
                name="preview_namespace_dns_label",
            ),
            models.CheckConstraint(condition=Q(head_sha__regex=r"^[0-9a-f]{40}$"), name="preview_head_sha_hex40"),
            models.CheckConstraint(condition=Q(status__in=PreviewStatus.values), name="preview_status_valid"),
            models.CheckConstraint(condition=Q(desired__in=DesiredState.values), name="preview_desired_valid"),
            models.CheckConstraint(condition=Q(generation__gte=1), name="preview_generation_positive"),
        ]
        indexes = [
            models.Index(fields=["repository", "status"], name="preview_repo_status_idx"),
            models.Index(
                fields=["expires_at"],
                name="preview_live_expiry_idx",
                condition=Q(desired=DesiredState.UP),
            ),
            # The watcher's and the sweep's questions: what is rolling out, deleting, or waiting for a slot.
            models.Index(fields=["status"], name="preview_engine_idx", condition=Q(status__in=[
                PreviewStatus.PENDING, PreviewStatus.DEPLOYING, PreviewStatus.DELETING])),
        ]

    def __str__(self) -> str:
        return f"{self.repository.full_name}#{self.pr_number}"

    @property
    def is_live(self) -> bool:
        return self.status in self.LIVE_STATUSES


class PreviewEvent(models.Model):
    """Append-only timeline: the audit log and the dashboard's history."""

    ActorKind = ActorKind
    Action = EventAction

    preview = models.ForeignKey(Preview, on_delete=models.CASCADE, related_name="events")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    actor_kind = models.CharField(max_length=10, choices=ActorKind.choices)
    actor = models.CharField(max_length=150, blank=True, help_text="User name, token name, delivery id, ...")
    action = models.CharField(max_length=40, choices=EventAction.choices)
    message = models.TextField(blank=True)
    details = models.JSONField(default=dict, blank=True)
    generation = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["preview", "-created_at"], name="event_preview_time_idx")]
        constraints = [
            models.CheckConstraint(condition=Q(actor_kind__in=ActorKind.values), name="event_actor_kind_valid"),
            models.CheckConstraint(condition=Q(action__in=EventAction.values), name="event_action_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M} {self.action} by {self.actor_kind}:{self.actor}"


class PullRequestState(models.TextChoices):
    OPEN = "open"
    CLOSED = "closed"
    MERGED = "merged"


class CommandOpt(models.TextChoices):
    """A /preview command's wish, which overrides the opt-in label until the label changes again."""

    NONE = "", "none"
    IN = optin.OPT_IN, "opted in by /preview"
    OUT = optin.OPT_OUT, "opted out by /preview delete"


class PullRequest(models.Model):
    """What the service knows of a pull request, whoever told it; kept for PRs without a preview too.

    - State, draft, labels and head repository come from the signed `pull_request` webhooks, a newer payload
      (by the PR's `updated_at`, kept in `github_updated_at`) replacing an older one and never the reverse;
      for a PR no webhook told about, from GitHub when the service asked (`asked_at`, `asked_known`).
    - The head is the latest commit seen as the PR's head and when (`head_seen_at`: a webhook's `updated_at`,
      or when GitHub was asked), with the commits seen as its head before it (`earlier_heads`), whatever
      order the observations arrive in.
    - `command_opt` is a /preview or /preview delete, which overrides the label until the label changes.

    `services.pull_requests` is the one module that writes and reads it.
    """

    State = PullRequestState

    repository = models.ForeignKey(Repository, on_delete=models.CASCADE, related_name="pull_requests")
    pr_number = models.PositiveIntegerField(validators=[validators.validate_pr_number])
    state = models.CharField(max_length=8, choices=PullRequestState.choices, default=PullRequestState.OPEN)
    draft = models.BooleanField(default=False)
    labels = models.JSONField(default=list, blank=True)
    head_repository = models.CharField(max_length=140, blank=True,
                                       help_text="owner/name of the branch's repository; empty: GitHub did not say")
    author_association = models.CharField(max_length=30, blank=True,
                                          help_text="GitHub's author_association of the PR's author (fork rules)")
    github_updated_at = models.DateTimeField(null=True, blank=True)
    head_sha = models.CharField(max_length=40, blank=True)
    head_seen_at = models.DateTimeField(null=True, blank=True)
    earlier_heads = models.JSONField(default=list, blank=True)
    asked_at = models.DateTimeField(null=True, blank=True)
    asked_known = models.BooleanField(default=False, help_text="GitHub answered when last asked")
    command_opt = models.CharField(max_length=3, choices=CommandOpt.choices, blank=True, default=CommandOpt.NONE)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint("repository", "pr_number", name="pullrequest_unique_repository_pr"),
            models.CheckConstraint(condition=Q(state__in=PullRequestState.values), name="pullrequest_state_valid"),
            models.CheckConstraint(condition=Q(command_opt__in=CommandOpt.values),
                                   name="pullrequest_command_opt_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.repository.full_name}#{self.pr_number} ({self.state})"


class CommentCommand(models.Model):
    """Every /preview comment received: the rate limit counts these, and they are the record for PRs
    without a preview (where there is no timeline)."""

    repository = models.ForeignKey(Repository, on_delete=models.CASCADE, related_name="comment_commands")
    pr_number = models.PositiveIntegerField()
    comment_id = models.BigIntegerField()
    login = models.CharField(max_length=39)
    association = models.CharField(max_length=30, blank=True)
    text = models.CharField(max_length=200, blank=True, help_text="The command line, cut to 200 characters")
    outcome = models.CharField(max_length=300, blank=True)
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-received_at"]
        indexes = [models.Index(fields=["repository", "pr_number", "-received_at"], name="command_pr_time_idx")]

    def __str__(self) -> str:
        return f"{self.repository.full_name}#{self.pr_number} {self.login}: {self.text}"


class WebhookDelivery(models.Model):
    """Deliveries already handled, so a redelivery is not acted on twice: by GitHub's delivery id, and by the
    SHA-256 of the signed body (the delivery id header is not signed: a captured body resent with a new id is
    still the same delivery)."""

    delivery_id = models.CharField(max_length=100, unique=True)
    body_sha256 = models.CharField(max_length=64, blank=True, help_text="SHA-256 of the verified body (hex)")
    event = models.CharField(max_length=50)
    action = models.CharField(max_length=50, blank=True)
    received_at = models.DateTimeField(auto_now_add=True)
    outcome = models.CharField(max_length=200, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["body_sha256"], condition=~models.Q(body_sha256=""),
                                               name="webhook_delivery_body_unique")]

    def __str__(self) -> str:
        return f"{self.event}/{self.action} {self.delivery_id}"


class OidcTokenUse(models.Model):
    """A GitHub Actions OIDC token's jti, remembered until the token expires: once per operation."""

    jti = models.CharField(max_length=255)
    operation = models.CharField(max_length=20)
    expires_at = models.DateTimeField(db_index=True)
    used_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint("jti", "operation", name="oidctokenuse_unique_jti_operation")]

    def __str__(self) -> str:
        return f"{self.operation} {self.jti}"


class GitHubState(models.Model):
    """The GitHub gateway's transport cache: listing ETags, the rate limit, a back-off deadline."""

    key = models.CharField(max_length=300, unique=True)
    etag = models.CharField(max_length=200, blank=True)
    data = models.JSONField(default=dict, blank=True)
    until = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return self.key


class WatcherStatus(models.Model):
    """What the cluster watcher last reported: one row per process that has been the leader."""

    holder = models.CharField(max_length=200, unique=True, help_text="host:pid of the watcher process")
    is_leader = models.BooleanField(default=False)
    connected = models.BooleanField(default=False)
    started_at = models.DateTimeField()
    heartbeat_at = models.DateTimeField()
    last_event_at = models.DateTimeField(null=True, blank=True)
    events_seen = models.BigIntegerField(default=0)
    backlog = models.PositiveIntegerField(default=0, help_text="watch events received but not yet processed")
    synced_kinds = models.JSONField(default=list, blank=True)
    detail = models.TextField(blank=True)

    class Meta:
        verbose_name_plural = "watcher status"
        ordering = ["-heartbeat_at"]

    def __str__(self) -> str:
        return f"watcher {self.holder}"


class ReaperRun(models.Model):
    """One reaper cycle: every decision with its reason, what was done, and any alert."""

    started_at = models.DateTimeField(auto_now_add=True, db_index=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    dry_run = models.BooleanField(default=False)
    decisions = models.JSONField(default=list, blank=True)
    summary = models.JSONField(default=dict, blank=True)
    errors = models.JSONField(default=list, blank=True)
    alert = models.TextField(blank=True)

    class Meta:
        ordering = ["-started_at"]

    def __str__(self) -> str:
        kind = "dry run" if self.dry_run else "run"
        return f"reaper {kind} {self.started_at:%Y-%m-%d %H:%M}"
