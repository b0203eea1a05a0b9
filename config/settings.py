"""Settings, all from environment variables (see the README's table).

Every value is parsed strictly by config.env: a malformed value stops start-up
with an error naming the variable.
"""

from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from config.env import Env, parse_database_url
from previews.manifests import DEFAULT_INGRESS_ANNOTATIONS, PROTECTED_NAMESPACES, ROUTING_MODES
from previews.validators import DNS_SUBDOMAIN_RE

env = Env()
BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = env.bool("DJANGO_DEBUG", False)
SECRET_KEY = env.str("DJANGO_SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is off")
    SECRET_KEY = "insecure-development-key-only-for-DJANGO_DEBUG"
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", ["localhost", "127.0.0.1"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", [])
# Under /api/ a CSRF refusal is problem+json like every other API answer (the dashboard keeps Django's page).
CSRF_FAILURE_VIEW = "previews.api.errors.csrf_failure"

# --- transport: TLS terminated in front (an ingress or load balancer) ----------------------------------------
# With DJANGO_BEHIND_TLS_PROXY, the proxy's X-Forwarded-Proto says whether the request came over HTTPS;
# cookies are Secure, browsers get HSTS, and plain HTTP is redirected (except the probes and /metrics, which
# the kubelet and Prometheus reach inside the cluster). `manage.py check --deploy` passes with it on.
DJANGO_BEHIND_TLS_PROXY = env.bool("DJANGO_BEHIND_TLS_PROXY", False)
if DJANGO_BEHIND_TLS_PROXY:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = True
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env.int("DJANGO_HSTS_SECONDS", 31_536_000, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("DJANGO_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = env.bool("DJANGO_HSTS_PRELOAD", False)
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
# Failed logins per user name and per client address before logins from them wait (dashboard and admin).
PREVIEWS_LOGIN_MAX_FAILURES = env.int("PREVIEWS_LOGIN_MAX_FAILURES", 10, minimum=1)
PREVIEWS_LOGIN_LOCKOUT_SECONDS = env.int("PREVIEWS_LOGIN_LOCKOUT_SECONDS", 900, minimum=1)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI served from our own static files, not a CDN
    "previews",  # before django_q: its `qcluster` command wraps django-q2's (previews/management/commands)
    "django_q",
    "dashboard",
]

MIDDLEWARE = [
    "config.middleware.RequestIdMiddleware",
    # A preview's own host (asleep, starting, gone) is answered before the service's host checks.
    "previews.visits.PreviewHostMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Last, so its process_exception sees a view's database outage first: 503 problem+json, not a 500.
    "config.middleware.DatabaseUnavailableMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": env.database("DATABASE_URL", "postgres://previews@127.0.0.1:54329/previews"),
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True  # serve app static files even without collectstatic (development, tests)
AUTHENTICATION_BACKENDS = ["previews.login_throttle.ThrottleBackend", "django.contrib.auth.backends.ModelBackend"]
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "previews"}}

# --- background tasks (django-q2) ---------------------------------------------
# A task that runs longer than Q_TIMEOUT is killed; one not acknowledged within
# Q_RETRY is handed out again. retry > timeout means a task is never run twice
# at once; a finite max_attempts stops a poisoned task from looping forever.
Q_TIMEOUT = env.int("Q_TIMEOUT", 600, minimum=10)
Q_RETRY = env.int("Q_RETRY", 720, minimum=11)
if Q_RETRY <= Q_TIMEOUT:
    raise ImproperlyConfigured(f"Q_RETRY ({Q_RETRY}) must be greater than Q_TIMEOUT ({Q_TIMEOUT})")
Q_CLUSTER = {
    "name": "previews",
    "workers": env.int("Q_WORKERS", 2, minimum=1, maximum=64),
    "timeout": Q_TIMEOUT,
    "retry": Q_RETRY,
    "max_attempts": env.int("Q_MAX_ATTEMPTS", 3, minimum=1, maximum=20),
    # django-q2 prunes successful results itself when save_limit > 0, but by locking and loading every kept
    # result for each finished task (1000 rows per task); 0 keeps them all, and the sweep prunes instead
    # (PREVIEWS_TASK_RESULTS_KEPT, services.task_results_prune) with one DELETE a minute.
    "save_limit": 0,
    "catch_up": False,
    # How long the ORM broker sleeps when it finds the queue empty. A deploy is ~0.1-0.3 s of work and
    # a repository has PREVIEWS_DEPLOY_SLOTS tasks queued at once, so a long sleep leaves workers idle
    # between refills; 0.2 s costs one indexed query per 0.2 s while idle.
    "poll": 0.2,
    "orm": "default",
}
REDIS_URL = env.str("REDIS_URL", "")
if REDIS_URL:
    Q_CLUSTER.pop("orm")
    Q_CLUSTER["redis"] = REDIS_URL

# --- previews -------------------------------------------------------------------
PREVIEWS_PUBLIC_URL = env.str("PREVIEWS_PUBLIC_URL", "http://localhost:8000").rstrip("/")
# Hosts of staging and other services whose cookies previews must not reach: a start-up check warns when a
# repository's previews share a registrable domain with one of them (or with PREVIEWS_PUBLIC_URL's host).
PREVIEWS_STAGING_HOSTS = env.list("PREVIEWS_STAGING_HOSTS", [])
# Touched by the worker and the watcher while they work, for exec probes (`python -m previews.heartbeat FILE AGE`).
PREVIEWS_HEARTBEAT_FILE = env.str("PREVIEWS_HEARTBEAT_FILE", "")
# How a preview's URL is written: https://pr-<N>.<base domain> by default; a scheme and port of their own where
# the route controller listens elsewhere (the local cluster's Traefik: http and 18080, from `scripts/kube env`).
PREVIEWS_PREVIEW_URL_SCHEME = env.choice("PREVIEWS_PREVIEW_URL_SCHEME", "https", ("https", "http"))
PREVIEWS_PREVIEW_URL_PORT = env.int("PREVIEWS_PREVIEW_URL_PORT", 0, minimum=0, maximum=65535)
# Namespaces that are never created, adopted or deleted, whatever a label says.
PREVIEWS_PROTECTED_NAMESPACES = sorted(PROTECTED_NAMESPACES | set(env.list("PREVIEWS_PROTECTED_NAMESPACES", [])))
# The cluster: a kubeconfig file (kubectl's own variable) and context, or, without KUBECONFIG, the in-cluster
# ServiceAccount.
PREVIEWS_KUBECONFIG = env.str("KUBECONFIG", "")
PREVIEWS_KUBE_CONTEXT = env.str("PREVIEWS_KUBE_CONTEXT", "")
PREVIEWS_ROLLOUT_TIMEOUT = env.int("PREVIEWS_ROLLOUT_TIMEOUT", 300, minimum=5, maximum=3600)
PREVIEWS_INGRESS_NAMESPACE = env.str("PREVIEWS_INGRESS_NAMESPACE", "ingress-nginx")
PREVIEWS_INGRESS_CLASS = env.str("PREVIEWS_INGRESS_CLASS", "")
# Where repositories' TLS Secrets (Repository.tls_secret_name) are copied from into every preview namespace with
# Ingress routing; empty: each namespace must already hold it (or the controller serves a default certificate).
PREVIEWS_TLS_SECRET_NAMESPACE = env.str("PREVIEWS_TLS_SECRET_NAMESPACE", "")
# The Ingress annotations a bundle may set (everything else is refused); the default names no host, URL,
# secret or snippet. See previews/manifests.py DEFAULT_INGRESS_ANNOTATIONS.
PREVIEWS_INGRESS_ANNOTATIONS = env.list("PREVIEWS_INGRESS_ANNOTATIONS", sorted(DEFAULT_INGRESS_ANNOTATIONS))
# How previews are reached, unless a repository chooses (Repository.routing): "ingress" (an Ingress per
# preview) or "gateway" (a Gateway API HTTPRoute attached to the one Gateway below).
PREVIEWS_ROUTING = env.choice("PREVIEWS_ROUTING", "ingress", ROUTING_MODES)
PREVIEWS_GATEWAY_NAMESPACE = env.str("PREVIEWS_GATEWAY_NAMESPACE", "gateway-system")
PREVIEWS_GATEWAY_NAME = env.str("PREVIEWS_GATEWAY_NAME", "previews")
# A listener of that Gateway (its sectionName); empty: any listener that admits the routes.
PREVIEWS_GATEWAY_SECTION = env.str("PREVIEWS_GATEWAY_SECTION", "")
for _name, _value in (("PREVIEWS_GATEWAY_NAMESPACE", PREVIEWS_GATEWAY_NAMESPACE),
                      ("PREVIEWS_GATEWAY_NAME", PREVIEWS_GATEWAY_NAME),
                      ("PREVIEWS_GATEWAY_SECTION", PREVIEWS_GATEWAY_SECTION or "optional")):
    if not DNS_SUBDOMAIN_RE.fullmatch(_value):
        raise ImproperlyConfigured(f"{_name}={_value!r} is not a Kubernetes object name")
# The namespace whose pods the preview NetworkPolicy admits in gateway routing: where the Gateway's proxies
# run. Empty: the Gateway's namespace (Istio, NGINX Gateway Fabric); Envoy Gateway runs them in its own
# namespace (envoy-gateway-system) unless told otherwise.
PREVIEWS_GATEWAY_DATAPLANE_NAMESPACE = env.str("PREVIEWS_GATEWAY_DATAPLANE_NAMESPACE", "")
# Whether a gateway-routed preview is ready only once the Gateway's controller has Accepted its route (and
# resolved its backends). Off for clusters where no controller writes route status.
PREVIEWS_GATEWAY_WAIT_FOR_STATUS = env.bool("PREVIEWS_GATEWAY_WAIT_FOR_STATUS", True)
# Where preview pods may send DNS queries: these pods in this namespace, and nowhere else on port 53.
PREVIEWS_DNS_NAMESPACE = env.str("PREVIEWS_DNS_NAMESPACE", "kube-system")
PREVIEWS_DNS_POD_LABELS = env.labels("PREVIEWS_DNS_POD_LABELS", {"k8s-app": "kube-dns"})
# In-cluster least privilege (deploy/): each preview namespace gets a RoleBinding of this ClusterRole to the
# service's own ServiceAccount ("namespace/name"). Empty: no RoleBinding (the credentials already suffice).
PREVIEWS_NAMESPACE_CLUSTERROLE = env.str("PREVIEWS_NAMESPACE_CLUSTERROLE", "")
PREVIEWS_SERVICE_ACCOUNT = env.str("PREVIEWS_SERVICE_ACCOUNT", "")
if PREVIEWS_NAMESPACE_CLUSTERROLE and PREVIEWS_SERVICE_ACCOUNT.count("/") != 1:
    raise ImproperlyConfigured("PREVIEWS_SERVICE_ACCOUNT must be 'namespace/name' when "
                               "PREVIEWS_NAMESPACE_CLUSTERROLE is set")
PREVIEWS_MAX_MANIFEST_BYTES = env.int("PREVIEWS_MAX_MANIFEST_BYTES", 1_048_576, minimum=1024)

# The engine (previews/provisioning.py, previews/engine/). Tasks apply and return; the watcher follows
# rollouts. A rollout that shows a reason that does not fix itself (ImagePullBackOff, CrashLoopBackOff,
# no room on the cluster, a quota or Pod Security refusal) fails after PREVIEWS_FAIL_FAST_SECONDS; one
# that is merely slow fails after PREVIEWS_ROLLOUT_TIMEOUT (counted from the end of the apply).
PREVIEWS_FAIL_FAST_SECONDS = env.int("PREVIEWS_FAIL_FAST_SECONDS", 60, minimum=0, maximum=3600)
# Deploy tasks of one repository in the queue at once; more wait for a slot, so one repository's flood
# never holds up the others.
PREVIEWS_DEPLOY_SLOTS = env.int("PREVIEWS_DEPLOY_SLOTS", 4, minimum=1, maximum=1000)
# After the Kubernetes API was unreachable, a deploy is tried again this many seconds later.
PREVIEWS_DEPLOY_RETRY_SECONDS = env.int("PREVIEWS_DEPLOY_RETRY_SECONDS", 15, minimum=1, maximum=3600)
# Successful django-q task results kept (the newest); the sweep deletes older ones. Failures are kept.
PREVIEWS_TASK_RESULTS_KEPT = env.int("PREVIEWS_TASK_RESULTS_KEPT", 1000, minimum=0)
# A queued deploy whose task is neither waiting in the broker nor was taken from it within this many seconds (its
# worker died, or failed on the database) is handed out again; a running deploy whose worker or database session
# ended is handed out again at once (its deploy lock went with the session). Checked every few seconds by the
# watcher's leader (engine/sweep.py `recover`); Q_RETRY stays django-q2's own outer bound.
PREVIEWS_LOST_TASK_SECONDS = env.int("PREVIEWS_LOST_TASK_SECONDS", 15, minimum=2, maximum=600)

# The reaper (see previews/reaper.py).
PREVIEWS_REAPER_INTERVAL_MINUTES = env.int("PREVIEWS_REAPER_INTERVAL_MINUTES", 5, minimum=1, maximum=1440)
PREVIEWS_REAPER_GRACE_MINUTES = env.int("PREVIEWS_REAPER_GRACE_MINUTES", 60, minimum=0)
# Deletions per minute, spent across cycles (a cycle may spend up to an interval's worth): with the defaults a
# cycle issues up to 1500, so 1000 expired previews all go in the first cycle after they expire.
PREVIEWS_REAPER_DELETIONS_PER_MINUTE = env.int("PREVIEWS_REAPER_DELETIONS_PER_MINUTE", 300, minimum=1,
                                               maximum=100_000)
# Expiry deletions pause while the service's, the database's and the Kubernetes API server's clocks disagree by more.
PREVIEWS_REAPER_CLOCK_TOLERANCE_MINUTES = env.int("PREVIEWS_REAPER_CLOCK_TOLERANCE_MINUTES", 5, minimum=1,
                                                  maximum=1440)
if env.str("PREVIEWS_REAPER_MAX_DELETIONS", ""):
    raise ImproperlyConfigured("PREVIEWS_REAPER_MAX_DELETIONS (deletions per cycle) is gone: set "
                               "PREVIEWS_REAPER_DELETIONS_PER_MINUTE instead, a rate spent across cycles")
PREVIEWS_REAPER_BREAKER_PERCENT = env.int("PREVIEWS_REAPER_BREAKER_PERCENT", 50, minimum=1, maximum=100)
PREVIEWS_REAPER_BREAKER_MIN_DELETIONS = env.int("PREVIEWS_REAPER_BREAKER_MIN_DELETIONS", 5, minimum=1)
PREVIEWS_REAPER_STUCK_MINUTES = env.int("PREVIEWS_REAPER_STUCK_MINUTES", 30, minimum=1)
PREVIEWS_REAPER_DRY_RUN = env.bool("PREVIEWS_REAPER_DRY_RUN", False)
PREVIEWS_EXPIRY_WARNING_HOURS = env.int("PREVIEWS_EXPIRY_WARNING_HOURS", 24, minimum=0)
# The reaper deletes a preview asleep for longer than this many days (0: never).
PREVIEWS_REAPER_SLEPT_DAYS = env.int("PREVIEWS_REAPER_SLEPT_DAYS", 0, minimum=0, maximum=3650)

# Sleep (previews/sleep.py): how often idle previews are looked for. The idle time is per repository.
PREVIEWS_SLEEP_CHECK_MINUTES = env.int("PREVIEWS_SLEEP_CHECK_MINUTES", 5, minimum=1, maximum=1440)
# /preview commands in PR comments (previews/pr_commands.py): at most this many per PR in the window.
PREVIEWS_COMMAND_RATE_LIMIT = env.int("PREVIEWS_COMMAND_RATE_LIMIT", 5, minimum=1, maximum=1000)
PREVIEWS_COMMAND_RATE_WINDOW_MINUTES = env.int("PREVIEWS_COMMAND_RATE_WINDOW_MINUTES", 10, minimum=1,
                                               maximum=1440)

# Preview data (see previews/gateways/preview_db.py): the shared Postgres server that holds the schemas and
# databases of previews, reached as a role with CREATEROLE and CREATEDB (not a superuser). Never the
# service's own database. Empty: the `schema` and `database` data modes are unavailable.
PREVIEWS_DATA_DATABASE_URL = env.postgres_url("PREVIEWS_DATA_DATABASE_URL")
# host:port the preview's pods use to reach that server (default: the URL's host and port).
if PREVIEWS_DATA_DATABASE_URL:
    _data_db = parse_database_url("PREVIEWS_DATA_DATABASE_URL", PREVIEWS_DATA_DATABASE_URL)
    if all(_data_db[k] == DATABASES["default"][k] for k in ("HOST", "PORT", "NAME")):
        raise ImproperlyConfigured("PREVIEWS_DATA_DATABASE_URL names the service's own database; preview data "
                                   "must live on another database")
PREVIEWS_DATA_HOST = env.str("PREVIEWS_DATA_HOST", "")
# CIDR the preview NetworkPolicy lets pods reach on the server's port (default: the host's address when it
# is an IP literal, else any address on that port only).
PREVIEWS_DATA_EGRESS_CIDR = env.str("PREVIEWS_DATA_EGRESS_CIDR", "")
# Seconds any one statement (and any lock wait) on the data server may take.
PREVIEWS_DATA_TIMEOUT = env.int("PREVIEWS_DATA_TIMEOUT", 60, minimum=1, maximum=3600)
# The data reaper drops at most this many orphaned previews' data per cycle.
PREVIEWS_DATA_REAPER_MAX_DROPS = env.int("PREVIEWS_DATA_REAPER_MAX_DROPS", 10, minimum=0)

# A static API token found active is trusted this many seconds per web process before its row is read again:
# a token revoked in the admin is refused everywhere at most this long after (0: read it on every request).
PREVIEWS_TOKEN_CACHE_SECONDS = env.int("PREVIEWS_TOKEN_CACHE_SECONDS", 5, minimum=0, maximum=60)
PREVIEWS_API_MAX_WAIT = 120  # seconds a GET ?wait=N may hold the request
# Long-polls hold a web thread each: at most this many at once per token, and per web process (keep it well
# under GUNICORN_THREADS so the API, the webhook, the dashboard and the probes always find a thread).
PREVIEWS_API_WAITS_PER_TOKEN = env.int("PREVIEWS_API_WAITS_PER_TOKEN", 2, minimum=0, maximum=100)
PREVIEWS_API_WAITS_TOTAL = env.int("PREVIEWS_API_WAITS_TOTAL", 4, minimum=0, maximum=1000)
GITHUB_WEBHOOK_SECRET = env.str("GITHUB_WEBHOOK_SECRET", "")
GITHUB_API_URL = env.str("GITHUB_API_URL", "https://api.github.com").rstrip("/")
GITHUB_TOKEN = env.str("GITHUB_TOKEN", "")
GITHUB_APP_ID = env.str("GITHUB_APP_ID", "")
GITHUB_APP_INSTALLATION_ID = env.str("GITHUB_APP_INSTALLATION_ID", "")
GITHUB_APP_PRIVATE_KEY = env.str("GITHUB_APP_PRIVATE_KEY", "")  # PEM text or a file path
GITHUB_WEB_URL = env.str("GITHUB_WEB_URL", "https://github.com").rstrip("/")
GITHUB_TIMEOUT = env.int("GITHUB_TIMEOUT", 5, minimum=1, maximum=60)
# A deploy request for a commit this service does not know to be the PR's head or an earlier one asks GitHub,
# inside the request, for at most this long (per connect and per read); without an answer it goes ahead.
PREVIEWS_STALE_CHECK_TIMEOUT = env.int("PREVIEWS_STALE_CHECK_TIMEOUT", 2, minimum=1, maximum=60)
if GITHUB_APP_ID and not (GITHUB_APP_INSTALLATION_ID and GITHUB_APP_PRIVATE_KEY):
    raise ImproperlyConfigured("GITHUB_APP_ID needs GITHUB_APP_INSTALLATION_ID and GITHUB_APP_PRIVATE_KEY too")
# GitHub Actions OIDC (previews/oidc.py): CI authenticates with the job's short-lived token, no stored secret.
# An empty issuer turns OIDC off (static API tokens keep working either way).
PREVIEWS_OIDC_ISSUER = env.str("PREVIEWS_OIDC_ISSUER", "https://token.actions.githubusercontent.com").rstrip("/")
# Empty: discovered from <issuer>/.well-known/openid-configuration.
PREVIEWS_OIDC_JWKS_URL = env.str("PREVIEWS_OIDC_JWKS_URL", "")
# The one audience accepted (workflows request it with &audience=). Default: this service's public URL.
PREVIEWS_OIDC_AUDIENCE = env.str("PREVIEWS_OIDC_AUDIENCE", PREVIEWS_PUBLIC_URL)
PREVIEWS_OIDC_ALLOWED_EVENTS = env.list("PREVIEWS_OIDC_ALLOWED_EVENTS", ["pull_request"])
PREVIEWS_OIDC_LEEWAY = env.int("PREVIEWS_OIDC_LEEWAY", 30, minimum=0, maximum=300)
PREVIEWS_OIDC_MAX_TOKEN_AGE = env.int("PREVIEWS_OIDC_MAX_TOKEN_AGE", 600, minimum=30, maximum=3600)
PREVIEWS_OIDC_JWKS_CACHE_SECONDS = env.int("PREVIEWS_OIDC_JWKS_CACHE_SECONDS", 3600, minimum=60, maximum=86400)
PREVIEWS_OIDC_JWKS_COOLDOWN = env.int("PREVIEWS_OIDC_JWKS_COOLDOWN", 60, minimum=1, maximum=3600)
PREVIEWS_OIDC_TIMEOUT = env.int("PREVIEWS_OIDC_TIMEOUT", 5, minimum=1, maximum=60)
# Room for the largest manifest bundle plus the rest of a request; a larger body gets 413.
DATA_UPLOAD_MAX_MEMORY_SIZE = PREVIEWS_MAX_MANIFEST_BYTES + 262_144

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["previews.api.auth.BearerTokenAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["previews.api.parsers.LimitedJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "EXCEPTION_HANDLER": "previews.api.errors.problem_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "PR previews API",
    "DESCRIPTION": "Create, update, read and delete a pull request's preview environment.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
}

PREVIEWS_METRICS_TOKEN = env.str("PREVIEWS_METRICS_TOKEN", "")

LOG_FORMAT = env.choice("LOG_FORMAT", "plain" if DEBUG else "json", ("json", "plain"))
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "config.logs.RequestIdFilter"}},
    "formatters": {
        "json": {"()": "config.logs.JsonFormatter"},
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["request_id"]}},
    "root": {"handlers": ["console"], "level": env.choice("LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR"))},
    "loggers": {
        # The access log is ours (JSON, with the request id); Django's own request warnings would repeat it.
        "django.request": {"level": "ERROR"},
        "django.server": {"level": "WARNING"},
    },
}

# Metrics of several gunicorn workers are merged through this directory (prometheus_client's multiprocess mode).
PROMETHEUS_MULTIPROC_DIR = env.str("PROMETHEUS_MULTIPROC_DIR", "")
