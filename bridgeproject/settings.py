"""Settings: every value comes from one django-environ ``env`` (see .env.example)."""

from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DJANGO_DEBUG", default=False)
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="dev-only-insecure-secret-key-change-me-in-production")
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "unfold",
    "unfold.contrib.filters",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_q",
    "alerts",
    "tenancy",
    "policies",
    "callbacks",
    "commands",
    "execution",
    "risk",
    "panel",
]

MIDDLEWARE = [
    "bridgeproject.middleware.CorrelationIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = env.str("DJANGO_ROOT_URLCONF", default="bridgeproject.urls")
WSGI_APPLICATION = "bridgeproject.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
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

# --- Database -------------------------------------------------------------------------------
# Default: an embedded SQLite file, so the bridge runs with nothing installed. PostgreSQL for
# real: DATABASE_URL=postgres://user@host:5432/bridge
VAR_DIR = Path(env.str("BRIDGE_VAR_DIR", default=str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'bridge.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the lanes read while the web process writes; IMMEDIATE takes the write lock at
    # BEGIN so two writers queue on busy_timeout instead of failing with "database is locked".
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=20000;",
    }
else:
    if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
        DATABASES["default"]["ENGINE"] = "bridgeproject.pgbackend"  # a health check without a round trip
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = env.bool("DATABASE_CONN_HEALTH_CHECKS", default=True)
    # The hot paths' fixed statements run prepared (bridgeproject.dbutil.prepared_cursor). psycopg
    # prepares nothing while the threshold is None (Django's default), not even on request; Django's
    # own cursors bind on the client and never prepare, and a threshold this high keeps psycopg from
    # preparing anything else by itself. Off (false) behind a pooler in transaction mode, which
    # cannot keep prepared statements.
    if env.bool("DATABASE_PREPARED_STATEMENTS", default=True):
        DATABASES["default"].setdefault("OPTIONS", {})["prepare_threshold"] = 2**31 - 1
    DATABASES["default"].setdefault("TEST", {})["NAME"] = env.str("TEST_DATABASE_NAME", default="test_bridge")
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Time: UTC everywhere -----------------------------------------------------------------
USE_TZ = True
TIME_ZONE = "UTC"
LANGUAGE_CODE = "en-us"
USE_I18N = False

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"

# --- Security -------------------------------------------------------------------------------
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_SECURE = env.bool("DJANGO_SECURE_COOKIES", default=False)
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE

# Body limit of PROTOCOL.md §1; the middleware answers 413 before anything reads it.
BRIDGE_MAX_BODY_BYTES = 256 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = BRIDGE_MAX_BODY_BYTES

# --- The bridge's own configuration (PROTOCOL.md §8) ------------------------------------------
PYTHON_INGEST_TOKEN = env.str("PYTHON_INGEST_TOKEN", default="")
PYTHON_INGEST_TENANTS = env.list("PYTHON_INGEST_TENANTS", default=[])
PYTHON_BRIDGE_URL = env.str("PYTHON_BRIDGE_URL", default="http://localhost:8000")
LARAVEL_API_URL = env.str("LARAVEL_API_URL", default="")
LARAVEL_INTERNAL_TOKEN = env.str("LARAVEL_INTERNAL_TOKEN", default="")
LARAVEL_WEBHOOK_SECRET = env.str("LARAVEL_WEBHOOK_SECRET", default="")
LARAVEL_PROTECTIVE_ACTIONS_PATH = env.str(
    "LARAVEL_PROTECTIVE_ACTIONS_PATH", default="/api/internal/mt5/protective-actions"
)
LARAVEL_COMMAND_RESULTS_PATH = env.str("LARAVEL_COMMAND_RESULTS_PATH", default="/api/internal/mt5/command-results")
BRIDGE_ENVIRONMENT = env.str("BRIDGE_ENVIRONMENT", default="prod")
# Where operators are alerted (apprise URLs, space- or comma-separated: mailto://, slack://,
# msteams://, tgram://, json://...). Empty: alerts are only shown in the panel.
ALERT_URLS = env.str("ALERT_URLS", default="")
CALLBACK_TIMEOUT_SECONDS = env.float("CALLBACK_TIMEOUT_SECONDS", default=10.0)
# Retried with exponential backoff and jitter for at least this long, then dead-lettered.
CALLBACK_RETRY_HOURS = env.float("CALLBACK_RETRY_HOURS", default=24.0)
CALLBACK_BACKOFF_BASE_SECONDS = env.float("CALLBACK_BACKOFF_BASE_SECONDS", default=1.0)
CALLBACK_BACKOFF_MAX_SECONDS = env.float("CALLBACK_BACKOFF_MAX_SECONDS", default=900.0)
CALLBACK_POLL_MS = env.int("CALLBACK_POLL_MS", default=200)
# Delivered callbacks older than this are deleted by `prune_callbacks` (dead letters never are).
CALLBACK_RETENTION_DAYS = env.int("CALLBACK_RETENTION_DAYS", default=30)

IDEMPOTENCY_RETENTION_HOURS = env.int("IDEMPOTENCY_RETENTION_HOURS", default=24)
API_TOKEN_CACHE_SECONDS = env.float("API_TOKEN_CACHE_SECONDS", default=5.0)
COMMAND_NORMAL_TTL_SECONDS = env.int("COMMAND_NORMAL_TTL_SECONDS", default=300)
# A fast command is attempted for this long after it was received, unless it names its own expiry.
FAST_LANE_DEADLINE_SECONDS = 30
# A normal-lane worker answering a doorbell goes on with the lane's next queued commands for up
# to this long (checked before each claim), paying django-q2's per-task cost once for many.
# On by default: it nearly doubles the normal lane's throughput, and four interleaved runs of the
# detection → close benchmark found protective closes no slower with it (docs/benchmarks.md).
NORMAL_LANE_DRAIN_SECONDS = env.float("NORMAL_LANE_DRAIN_SECONDS", default=2.0)
# The same on the fast lane, where it keeps a command whose doorbell a crash lost from waiting
# for the sweeper: the next doorbell of the lane runs it (a doorbell runs the lane's oldest).
FAST_LANE_DRAIN_SECONDS = env.float("FAST_LANE_DRAIN_SECONDS", default=1.0)
# Before each normal command, wait this long at most while fast commands are at work (0: never).
NORMAL_LANE_YIELD_MS = env.int("NORMAL_LANE_YIELD_MS", default=50)
# A command `executing` longer than this lost its worker; the sweeper re-queues it.
COMMAND_EXECUTING_LEASE_SECONDS = env.int("COMMAND_EXECUTING_LEASE_SECONDS", default=90)
# A fast command's lease: its worker renews it every FAST_LANE_LEASE_RENEW_SECONDS while it
# executes, and the sweeper (every FAST_LANE_SWEEP_SECONDS) sends back a fast command whose lease
# lapsed: a fast worker that dies mid-close costs about a second, not the 90 s above.
FAST_LANE_LEASE_SECONDS = env.float("FAST_LANE_LEASE_SECONDS", default=1.2)
FAST_LANE_LEASE_RENEW_SECONDS = env.float("FAST_LANE_LEASE_RENEW_SECONDS", default=0.3)
FAST_LANE_SWEEP_SECONDS = env.float("FAST_LANE_SWEEP_SECONDS", default=0.2)
if FAST_LANE_LEASE_RENEW_SECONDS * 3 > FAST_LANE_LEASE_SECONDS:
    raise ImproperlyConfigured("FAST_LANE_LEASE_SECONDS must allow three renewals (FAST_LANE_LEASE_RENEW_SECONDS)")
# A command `queued` longer than this may have lost its task (Redis broker); rung again.
COMMAND_QUEUED_GRACE_SECONDS = env.int("COMMAND_QUEUED_GRACE_SECONDS", default=600)
# The same for a fast command when its broker is Redis (a doorbell can be lost there).
COMMAND_FAST_QUEUED_GRACE_SECONDS = env.int("COMMAND_FAST_QUEUED_GRACE_SECONDS", default=3)
# Pauses between attempts after a retryable MT5 answer; the command's deadline bounds them all.
COMMAND_RETRY_BACKOFF_SECONDS = [
    float(x)
    for x in env.list("COMMAND_RETRY_BACKOFF_SECONDS", default=["0.05", "0.1", "0.2", "0.4", "0.8", "1.6", "2"])
]

# MT5 stamps every time in the broker server's wall clock (UTC + an offset no API field gives).
# The adapter learns the offset from ticks and falls back to this when none is fresh (market
# closed); the simulator's server runs this many hours ahead of UTC, as an EET broker does.
MT5_SERVER_UTC_OFFSET_HOURS = env.float("MT5_SERVER_UTC_OFFSET_HOURS", default=2.0)
SIM_SERVER_UTC_OFFSET_HOURS = env.float("SIM_SERVER_UTC_OFFSET_HOURS", default=2.0)
# The simulator's cost model, on by default with a real terminal's costs: a login() takes this
# long (a real one waits for the trade server to authorise), and every other call this long.
SIM_LOGIN_SECONDS = env.float("SIM_LOGIN_SECONDS", default=1.0)
SIM_CALL_MS = env.float("SIM_CALL_MS", default=1.0)
# The terminal option "Disable algorithmic trading when the account has been changed".
SIM_DISABLE_AT_ON_SWITCH = env.bool("SIM_DISABLE_AT_ON_SWITCH", default=False)

# One owner per terminal (execution.owners): the lease lapses this long after its holder stops
# renewing it (dies), renewed this often; a call sent to another process's terminal waits this
# long for its answer; an owner runs this many calls at once (each terminal one at a time).
TERMINAL_LEASE_SECONDS = env.float("TERMINAL_LEASE_SECONDS", default=3.0)
TERMINAL_LEASE_RENEW_SECONDS = env.float("TERMINAL_LEASE_RENEW_SECONDS", default=1.0)
TERMINAL_CALL_TIMEOUT_SECONDS = env.float("TERMINAL_CALL_TIMEOUT_SECONDS", default=30.0)
TERMINAL_OWNER_THREADS = env.int("TERMINAL_OWNER_THREADS", default=8)
# Who may take a terminal nobody drives: "any" process that needs it (one process: the tests, a
# shell), or only the terminal "hosts" (riskmonitor --host-terminals, manage.py terminalhost),
# every other process sending its calls to them and waiting for one. runbridge sets "hosts".
TERMINAL_OWNERS = env.str("TERMINAL_OWNERS", default="any")
if TERMINAL_OWNERS not in ("any", "hosts"):
    raise ImproperlyConfigured(f"TERMINAL_OWNERS must be any or hosts, not {TERMINAL_OWNERS!r}")
# While a fast call (a protective command) runs on an owner, it claims no other call for up to
# this long: the close has the process, the cores and the database to itself.
TERMINAL_FAST_ALONE_SECONDS = env.float("TERMINAL_FAST_ALONE_SECONDS", default=0.25)
# How long a terminal host's busy thread may keep Python's interpreter lock before a thread back
# from the database or the terminal gets it (sys.setswitchinterval; Python's default is 5 ms).
TERMINAL_HOST_SWITCH_INTERVAL_MS = env.float("TERMINAL_HOST_SWITCH_INTERVAL_MS", default=1.0)
# Brokers name symbols per trade server (EURUSD.m, EURUSDm, ...): each simulated server listed here
# shows every symbol under its name plus this suffix and knows no other name ("SERVER=SUFFIX,...").
SIM_SYMBOL_SUFFIXES = env.dict("SIM_SYMBOL_SUFFIXES", default={"Broker-Suffix": ".m"})

MT5_BACKEND = env.str("MT5_BACKEND", default="simulator")
MT5_TERMINAL_PATH = env.str("MT5_TERMINAL_PATH", default="")
MT5_LOGIN = env.int("MT5_LOGIN", default=0)
MT5_PASSWORD = env.str("MT5_PASSWORD", default="")
MT5_SERVER = env.str("MT5_SERVER", default="")
MT5_MAGIC = env.int("MT5_MAGIC", default=20260529)
# The Manager API backend (MT5_BACKEND=manager, docs/manager-api.md): host:port, or "simulator".
MT5_MANAGER_SERVER = env.str("MT5_MANAGER_SERVER", default="")
MT5_MANAGER_LOGIN = env.int("MT5_MANAGER_LOGIN", default=0)
MT5_MANAGER_PASSWORD = env.str("MT5_MANAGER_PASSWORD", default="")
MT5_MANAGER_GROUPS = env.str("MT5_MANAGER_GROUPS", default="*")
# How often the simulator's Manager surface refreshes its pumped copy and calls the sinks.
SIM_MANAGER_PUMP_MS = env.int("SIM_MANAGER_PUMP_MS", default=20)
# Where that pump reads and compares: "thread" (a thread of the connection's own process, holding its
# interpreter lock while it does) or "process" (a spawned process of its own, on the same database, as
# the real API's native pump thread leaves the interpreter free; needs a database another process can
# open: not an in-memory SQLite one, where it falls back to the thread).
SIM_MANAGER_PUMP_IN = env.str("SIM_MANAGER_PUMP_IN", default="thread")
MT5LINUX_HOST = env.str("MT5LINUX_HOST", default="127.0.0.1")
MT5LINUX_PORT = env.int("MT5LINUX_PORT", default=18812)

RISK_POLL_INTERVAL_MS = env.int("RISK_POLL_INTERVAL_MS", default=500)
# How long a busy thread of the risk monitor's process (a polling cycle, the Manager API's
# dispatcher) may keep Python's interpreter lock before the event monitor's thread, back from the
# database or woken by a tick, gets it (sys.setswitchinterval; Python's default is 5 ms).
RISK_MONITOR_SWITCH_INTERVAL_MS = env.float("RISK_MONITOR_SWITCH_INTERVAL_MS", default=1.0)
# The risk monitor (riskmonitor) on a terminal backend closes a breach's position(s) through the
# terminal's owner as its read finds the breach, before the action is recorded (risk.ahead); off:
# the protective command sends the close once the action is recorded.
RISK_CLOSE_AHEAD = env.bool("RISK_CLOSE_AHEAD", default=True)
# A protective action whose goal does not hold this long after its breach alerts operators and
# reports its outcome so far to Laravel; the bridge keeps trying (RISK_RULES.md).
PROTECTION_ALERT_SECONDS = env.int("PROTECTION_ALERT_SECONDS", default=60)
# A protective close the event monitor sent ahead whose action is still unrecorded this long
# after (2 x the Manager API's answer timeout) is recorded by the sweeper from its note.
SENT_AHEAD_RECOVER_SECONDS = env.int("SENT_AHEAD_RECOVER_SECONDS", default=20)
RISK_MAX_SNAPSHOT_AGE_MS = env.int("RISK_MAX_SNAPSHOT_AGE_MS", default=5000)

# django-q2 keeps each cluster's heartbeat in the cache: a database table is shared by every
# process (web, both lanes) without another server.
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.db.DatabaseCache",
        "LOCATION": "bridge_cache",
    }
}

# --- Queues: two django-q2 clusters ----------------------------------------------------------
# `normal` is the default cluster; `Q_CLUSTER_NAME=fastlane` selects the fast lane's own
# workers. Both share `name` (the signing salt) and SECRET_KEY. The ORM broker enqueues inside
# the command's transaction: a command row never exists without its task, nor a task without
# its row. `retry` stays above `timeout` so a running task is never redelivered.
REDIS_URL = env.str("REDIS_URL", default="")
# Ringing the fast lane's Redis doorbell from a request or the sweeper waits at most this long
# (connect, then the command); a Redis that fails is then left alone for REDIS_RETRY_AFTER_SECONDS:
# the command is already stored, and the sweeper rings again.
REDIS_SOCKET_TIMEOUT_SECONDS = env.float("REDIS_SOCKET_TIMEOUT_SECONDS", default=0.1)
REDIS_RETRY_AFTER_SECONDS = env.float("REDIS_RETRY_AFTER_SECONDS", default=1.0)
# The fast lane's broker: `redis` (the default when REDIS_URL is set) wakes a worker the moment a
# task arrives (BLPOP) instead of polling the database. Redis has no delivery receipts, so the
# doorbell is rung after the command commits, and the sweeper rings again for a fast command
# still queued after COMMAND_FAST_QUEUED_GRACE_SECONDS. `orm`: the database, like the normal lane.
FAST_LANE_BROKER = env.str("FAST_LANE_BROKER", default="") or ("redis" if REDIS_URL else "orm")
if FAST_LANE_BROKER not in {"redis", "orm"}:
    raise ImproperlyConfigured(f"FAST_LANE_BROKER must be redis or orm, not {FAST_LANE_BROKER!r}")
if FAST_LANE_BROKER == "redis" and not REDIS_URL:
    raise ImproperlyConfigured("FAST_LANE_BROKER=redis needs REDIS_URL")
Q_NORMAL_WORKERS = env.int("Q_NORMAL_WORKERS", default=2)
Q_FAST_WORKERS = env.int("Q_FAST_WORKERS", default=2)
# Normal-lane workers run at this lower CPU priority (nice), so they never slow the fast lane
# or the risk monitor on a busy machine. 0 leaves them as they are.
NORMAL_LANE_NICE = env.int("NORMAL_LANE_NICE", default=19)
Q_CLUSTER = {
    "name": "normal",
    "orm": "default",
    "workers": Q_NORMAL_WORKERS,
    "timeout": 60,
    "retry": 120,
    "poll": env.float("Q_NORMAL_POLL", default=0.05),
    # One doorbell at a time: a worker answering one drains the lane, so doorbells fetched ahead
    # would find their commands already run.
    "bulk": 1,
    # The command row is the record; successful task results are not stored again (failures are).
    "save_limit": -1,
    "catch_up": False,
    "ack_failures": True,
    "max_attempts": 1,
    "label": "Queue",
    "ALT_CLUSTERS": {
        "fastlane": {
            "workers": Q_FAST_WORKERS,
            # A fast command stops retrying at its 30 s deadline; a doorbell's run is that, plus
            # the drain's FAST_LANE_DRAIN_SECONDS and one last attempt, inside the timeout.
            "timeout": 45,
            "retry": 90,
            "poll": env.float("Q_FAST_POLL", default=0.005),
            "bulk": 1,
            **({"orm": None, "redis": REDIS_URL} if FAST_LANE_BROKER == "redis" else {}),
        },
    },
}

# A doorbell's run is its drain, then one command's pauses between attempts (cut short by the
# command's deadline: the normal TTL, the fast lane's 30 s), then its attempts. It must end inside
# its cluster's task timeout, which kills the worker mid-command; 5 s are left for the attempts.
for _cluster, _drain, _deadline, _timeout in (
    ("normal", NORMAL_LANE_DRAIN_SECONDS, COMMAND_NORMAL_TTL_SECONDS, Q_CLUSTER["timeout"]),
    ("fastlane", FAST_LANE_DRAIN_SECONDS, FAST_LANE_DEADLINE_SECONDS, Q_CLUSTER["ALT_CLUSTERS"]["fastlane"]["timeout"]),
):
    _pauses = min(sum(COMMAND_RETRY_BACKOFF_SECONDS), _deadline)
    if _drain + _pauses > _timeout - 5:
        raise ImproperlyConfigured(
            f"The {_cluster} cluster's drain ({_drain} s) and retry pauses ({_pauses} s) must end 5 s "
            f"inside its task timeout ({_timeout} s): shorten COMMAND_RETRY_BACKOFF_SECONDS or the drain."
        )

# --- REST framework ---------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["tenancy.auth.BearerTokenAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["bridgeproject.parsers.StrictJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["bridgeproject.renderers.BridgeJSONRenderer"],
    "EXCEPTION_HANDLER": "bridgeproject.errors.problem_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
    # Serializers hand datetimes to the renderer, which writes RFC 3339 UTC with milliseconds.
    "DATETIME_FORMAT": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "MT5 execution and risk bridge",
    "DESCRIPTION": "Bridge protocol v1: the contract the Laravel back office integrates against.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # PROTOCOL §9 "OpenAPI": 3.1 (webhooks, JSON Schema 2020-12), both callbacks under `webhooks`.
    "OAS_VERSION": "3.1.0",
    "WEBHOOKS": ["commands.openapi.PROTECTIVE_ACTION_WEBHOOK", "commands.openapi.COMMAND_RESULT_WEBHOOK"],
    "ENUM_NAME_OVERRIDES": {"CommandTypeEnum": "commands.models.CommandType", "SideEnum": ["buy", "sell"]},
}

# --- Logging: one JSON object a line, with the correlation id, tenant, account and command ---
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"context": {"()": "bridgeproject.logging.ContextFilter"}},
    "formatters": {"json": {"()": "bridgeproject.logging.JsonFormatter"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "json", "filters": ["context"]},
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        "django_q": {"level": env.str("Q_LOG_LEVEL", default="WARNING"), "propagate": True},
    },
}

# --- Operational panel ----------------------------------------------------------------------
# The admin is themed with django-unfold (docs/operations.md, "The panel"). Every sidebar link is
# checked against the user's permissions in panel.navigation; rows are scoped to the user's
# tenants by panel.scoping.
UNFOLD = {
    "SITE_TITLE": "MT5 bridge panel",
    "SITE_HEADER": "MT5 bridge",
    "SITE_SUBHEADER": "Operational panel",
    "SITE_SYMBOL": "candlestick_chart",
    "SITE_FAVICONS": [{"rel": "icon", "type": "image/svg+xml", "href": "panel.navigation.favicon"}],
    "SHOW_HISTORY": True,
    "SHOW_VIEW_ON_SITE": False,
    "ENVIRONMENT": "panel.navigation.environment_badge",
    "DASHBOARD_CALLBACK": "panel.dashboard.dashboard_callback",
    "STYLES": ["panel.navigation.panel_stylesheet"],
    "SIDEBAR": {"show_search": True, "show_all_applications": False, "navigation": "panel.navigation.sidebar"},
}
# Times in the admin read as 2026-05-29 12:00:00 UTC, not "May 29, 2026, noon".
FORMAT_MODULE_PATH = ["panel.formats"]
# Swagger UI and ReDoc from the drf-spectacular-sidecar package: no CDN at run time.
SPECTACULAR_SETTINGS.update(
    {
        "SWAGGER_UI_DIST": "SIDECAR",
        "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
        "REDOC_DIST": "SIDECAR",
        "SWAGGER_UI_SETTINGS": {"persistAuthorization": False, "displayOperationId": True, "tryItOutEnabled": False},
    }
)
# gunicorn serves no static files: WhiteNoise serves the panel's, unfold's and the sidecar's
# straight from the installed apps (no collectstatic step), right after SecurityMiddleware.
MIDDLEWARE.insert(
    MIDDLEWARE.index("django.middleware.security.SecurityMiddleware") + 1, "panel.middleware.StaticFilesMiddleware"
)
WHITENOISE_USE_FINDERS = True
# The dashboard refreshes itself with htmx polling (unfold ships htmx and serves it from static):
# django-htmx's middleware sets request.htmx, so a poll gets the fragment and a signed-out poll a
# client redirect instead of a login form swapped into the page.
INSTALLED_APPS.append("django_htmx")
MIDDLEWARE.append("django_htmx.middleware.HtmxMiddleware")
# Signing in on a bookmarked /admin/login/ (no ?next=) lands on the dashboard, not on Django's
# default /accounts/profile/ (which the bridge does not serve).
LOGIN_URL = "admin:login"
LOGIN_REDIRECT_URL = "admin:index"
# --- end of operational panel ---------------------------------------------------------------
# --- Abuse limits ---------------------------------------------------------------------------
# Failed authentications per client (bridgeproject/ratelimit.py): past the limit within one
# window the client gets 429 with Retry-After until the window ends. 0 disables the limit.
AUTH_FAILURES_PER_MINUTE = env.int("AUTH_FAILURES_PER_MINUTE", default=30)
AUTH_FAILURE_WINDOW_SECONDS = env.int("AUTH_FAILURE_WINDOW_SECONDS", default=60)
# How many reverse proxies of ours stand in front of the bridge. 0: X-Forwarded-For is never
# believed and the client is the peer address; N: the client is the Nth address from the right.
TRUSTED_PROXY_COUNT = env.int("TRUSTED_PROXY_COUNT", default=0)
# The failure counters live in Redis when REDIS_URL is set (exact), else in the "default" cache.
RATE_LIMIT_REDIS_URL = REDIS_URL
# Problem responses are documented as application/problem+json, as they are sent.
SPECTACULAR_SETTINGS["POSTPROCESSING_HOOKS"] = [
    "drf_spectacular.hooks.postprocess_schema_enums",
    "bridgeproject.errors.document_problem_content_type",
    "commands.openapi.document_headers_and_codes",
]
# --- end of abuse limits --------------------------------------------------------------------
