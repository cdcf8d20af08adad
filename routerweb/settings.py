"""routerweb settings: the one settings module; everything that varies comes from the environment.

Every variable read here is listed, with its default, in `.env.example` and in the README.
"""

import os
import re
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"  # local state: test databases, the call spool (git-ignored)
VAR_DIR.mkdir(exist_ok=True)

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

# ------------------------------------------------------------------------------
# CORE
# https://docs.djangoproject.com/en/5.2/ref/settings/#core-settings
# ------------------------------------------------------------------------------
DEBUG = env.bool("DEBUG", default=False)

SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. Set SECRET_KEY in the environment (or .env), "
            "or set DEBUG=1 for local development with a throwaway key."
        )
    SECRET_KEY = "insecure-development-key-do-not-use-in-production"

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

ROOT_URLCONF = "routerweb.urls"
ASGI_APPLICATION = "routerweb.asgi.application"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# ------------------------------------------------------------------------------
# APPS
# ------------------------------------------------------------------------------
DJANGO_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
]
LOCAL_APPS = [
    "routing",
    "billing",
]
INSTALLED_APPS = DJANGO_APPS + LOCAL_APPS

# ------------------------------------------------------------------------------
# MIDDLEWARE
# The pages and the admin use the full stack below. The /v1/ API is dispatched in
# routerweb/asgi.py to a lean handler without middleware (routing/asgi_api.py), which does itself what
# matters to an API: the Host check against ALLOWED_HOSTS and `X-Content-Type-Options: nosniff`.
# ------------------------------------------------------------------------------
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "routerweb.middleware.nul_bytes_rejected",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "routerweb.middleware.AdminLookupErrorsMiddleware",
]

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

# ------------------------------------------------------------------------------
# DATABASES
# https://django-environ.readthedocs.io/en/latest/types.html#environ-env-db-url
# ------------------------------------------------------------------------------
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A file (not :memory:) so that live test servers and worker processes see one database; one per
    # test run, so that runs side by side do not share it.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test-{os.getpid()}.sqlite3")}
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # A connection pool rather than persistent connections: under ASGI, Django runs each page
    # request's sync code in its own thread, and a persistent connection would stay with that thread.
    # With health checks, the pool tests a connection before handing it out: after a database
    # restart its idle connections are dead, and no request may get one.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": 2,
        "max_size": env.int("DB_POOL_MAX_SIZE", default=20),
        "timeout": 10,
    }

# ------------------------------------------------------------------------------
# CACHES: local memory by default; Redis (shared by every worker) when REDIS_URL is set.
# ------------------------------------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": env.str("CACHE_KEY_PREFIX", default="routerweb"),
        }
    }
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": "routerweb",
            "KEY_PREFIX": env.str("CACHE_KEY_PREFIX", default="routerweb"),
        }
    }

# ------------------------------------------------------------------------------
# AUTH
# ------------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
# Failed logins for one username from one address before that pair is refused, and for how long
# (routerweb/login_throttle.py; the admin's login and the site's).
ROUTERWEB_LOGIN_FAILURES = env.int("ROUTERWEB_LOGIN_FAILURES", default=5)
ROUTERWEB_LOGIN_LOCKOUT_S = env.int("ROUTERWEB_LOGIN_LOCKOUT_S", default=900)
LOGIN_REDIRECT_URL = "/playground/"
LOGOUT_REDIRECT_URL = "login"
# The playground's JSON endpoints answer CSRF failures in OpenAI's error shape; pages get Django's page.
CSRF_FAILURE_VIEW = "routing.views.playground.csrf_failure"

# ------------------------------------------------------------------------------
# I18N
# ------------------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# ------------------------------------------------------------------------------
# STATIC: whitenoise serves hashed, compressed files.
# https://whitenoise.readthedocs.io/en/stable/django.html
# ------------------------------------------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

# ------------------------------------------------------------------------------
# SECURITY (only meaningful behind HTTPS; off by default for local use). With the README's production
# variables `manage.py check --deploy` reports nothing.
# https://docs.djangoproject.com/en/5.2/ref/middleware/#module-django.middleware.security
# ------------------------------------------------------------------------------
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if env.bool("BEHIND_HTTPS_PROXY", False) else None
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env.bool("SECURE_COOKIES", default=False)
# Pages redirect plain HTTP to HTTPS; /v1/ never redirects (a client's POST would lose its body).
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=False)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)

# ------------------------------------------------------------------------------
# LOGGING: the gateway logs each fallback hop at INFO; secrets are never logged.
# ------------------------------------------------------------------------------
# One line per call on logger routerweb.calls at INFO (routing/call_log.py); LOG_FORMAT=json makes every
# line a JSON object (routerweb/log_format.py).
LOG_FORMAT = env.str("LOG_FORMAT", default="plain")
if LOG_FORMAT not in ("plain", "json"):
    raise ImproperlyConfigured(f"LOG_FORMAT must be plain or json, not {LOG_FORMAT!r}.")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "routerweb.log_format.JsonFormatter"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="WARNING")},
    "loggers": {"routerweb.calls": {"level": env.str("LOG_CALLS_LEVEL", default="INFO")}},
}
# The call log line carries the prompt's messages (off: never a prompt or a completion in the logs).
ROUTERWEB_LOG_CONTENT = env.bool("ROUTERWEB_LOG_CONTENT", default=False)

# ------------------------------------------------------------------------------
# OPERATIONS: /healthz, /readyz, /metrics (routerweb/ops.py), shutdown
# ------------------------------------------------------------------------------
# Bearer token for GET /metrics (staff sessions may read it too); unset: off for everyone else.
ROUTERWEB_METRICS_TOKEN = env.str("ROUTERWEB_METRICS_TOKEN", default="")
# Several workers on one machine: the directory their metric values are added up in (prometheus_client's
# multiprocess mode reads it from the environment; routerweb/serve.py empties it before the workers start).
PROMETHEUS_MULTIPROC_DIR = env.str("PROMETHEUS_MULTIPROC_DIR", default="")
# On SIGTERM: how long calls in flight (streams included) may take to finish before the worker exits.
ROUTERWEB_SHUTDOWN_GRACE_S = env.float("ROUTERWEB_SHUTDOWN_GRACE_S", default=30.0)
# Load balancers probe over plain HTTP: never redirect the operations endpoints.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]

# ------------------------------------------------------------------------------
# ROUTERWEB
# ------------------------------------------------------------------------------
# Largest accepted request body on /v1/ (bytes); larger bodies get 413.
ROUTERWEB_MAX_BODY_BYTES = env.int("ROUTERWEB_MAX_BODY_BYTES", default=4 * 1024 * 1024)
# Circuit breaker: consecutive retryable failures before a model's circuit opens, and for how long.
# The metering backend (routing/metering.py): prices, budgets and cost rows.
ROUTERWEB_METER = env.str("ROUTERWEB_METER", default="billing.metering.BillingMeter")
# Extra provider API formats: dotted paths to routing.providers.base.ProviderAdapter subclasses.
ROUTERWEB_PROVIDER_ADAPTERS = env.list("ROUTERWEB_PROVIDER_ADAPTERS", default=[])
ROUTERWEB_CIRCUIT_FAILURES = env.int("ROUTERWEB_CIRCUIT_FAILURES", default=3)
ROUTERWEB_CIRCUIT_OPEN_S = env.float("ROUTERWEB_CIRCUIT_OPEN_S", default=30.0)
# Rate limits every API key has unless it sets its own (0: unlimited); counted in Redis with REDIS_URL.
ROUTERWEB_KEY_RPM = env.int("ROUTERWEB_KEY_RPM", default=0)
ROUTERWEB_KEY_TPM = env.int("ROUTERWEB_KEY_TPM", default=0)
# Response cache: the largest stored answer, and the bytes stored by all workers over the longest TTL (a day).
ROUTERWEB_CACHE_MAX_ENTRY_BYTES = env.int("ROUTERWEB_CACHE_MAX_ENTRY_BYTES", default=1024 * 1024)
ROUTERWEB_CACHE_MAX_TOTAL_BYTES = env.int("ROUTERWEB_CACHE_MAX_TOTAL_BYTES", default=256 * 1024 * 1024)
# Where cost rows are spooled before their batched insert (survives a crash, replayed at start-up).
ROUTERWEB_SPOOL_DIR = Path(env.str("ROUTERWEB_SPOOL_DIR", default=str(VAR_DIR / "spool")))
# Variables a provider's api_key_env may name besides *_API_KEY and *_TOKEN (routing/secrets.py).
ROUTERWEB_KEY_VARIABLES = frozenset(env.list("ROUTERWEB_KEY_VARIABLES", default=[]))
# Serve the offline demo provider (an echo model, routing/demo_provider.py) under /demo/v1/. `make run`
# turns it on in .env; off otherwise.
# The dashboard's default time zone (IANA name): where its days, "today" and day buckets begin.
ROUTERWEB_DASHBOARD_TZ = env.str("ROUTERWEB_DASHBOARD_TZ", default="UTC")
ROUTERWEB_DEMO_PROVIDER = env.bool("ROUTERWEB_DEMO_PROVIDER", default=False)
# Base URL the app is reachable at: where a provider whose base URL is a path (the demo provider's
# /demo/v1) is reached outside a request; within one it is the address the call came in on.
ROUTERWEB_PUBLIC_URL = env.str("ROUTERWEB_PUBLIC_URL", default="http://127.0.0.1:8000")

# ------------------------------------------------------------------------------
# CALL BODIES (stored only where a body storage rule opts in; billing/call_body_build.py)
# ------------------------------------------------------------------------------
# The most bytes kept of a call's request and of its answer (each); what is cut ends with a marker.
ROUTERWEB_BODY_MAX_BYTES = env.int("ROUTERWEB_BODY_MAX_BYTES", default=64 * 1024)
if ROUTERWEB_BODY_MAX_BYTES < 1024:
    raise ImproperlyConfigured("ROUTERWEB_BODY_MAX_BYTES must be at least 1024.")
# Regular expressions (a JSON list) redacted from bodies before they are stored, besides the built-in
# ones (API-key-like strings such as sk-…, rw-… and Bearer tokens).
ROUTERWEB_BODY_REDACT = env.json("ROUTERWEB_BODY_REDACT", default=[])
try:
    if not isinstance(ROUTERWEB_BODY_REDACT, list):
        raise TypeError(f"not a list: {ROUTERWEB_BODY_REDACT!r}")
    for _pattern in ROUTERWEB_BODY_REDACT:
        re.compile(_pattern)
except (TypeError, re.error) as _exc:
    raise ImproperlyConfigured(f"ROUTERWEB_BODY_REDACT must be a JSON list of regular expressions: {_exc}") from None
# Stored bodies are deleted this many days after their call (by the recorder's upkeep and by
# `manage.py purge_call_bodies`); 0 keeps them.
ROUTERWEB_BODY_RETENTION_DAYS = env.int("ROUTERWEB_BODY_RETENTION_DAYS", default=30)
