"""Which environment variables may hold a provider's key, and reading one at call time.

A provider names the variable that holds its key (`api_key_env`), and routerweb sends that
variable's value to the provider's `base_url` (as a Bearer token, or as its API format wants it:
`x-api-key` for Anthropic). Whoever may edit providers picks
both, so an arbitrary name would hand any secret of the process (the Django secret key, the database
URL with its password) to any server. A name is therefore allowed only when it ends in one of
`KEY_VARIABLE_SUFFIXES` or is listed in the `ROUTERWEB_KEY_VARIABLES` setting, and never when
routerweb itself reads it (`OWN_VARIABLES`, or any `ROUTERWEB_…`/`DJANGO_…` name), whatever the
setting says. `api_key_env_refusal` is the one check: the admin form and `import_registry` (through
`Provider.clean`) and the router at call time (the candidate is skipped with the reason) all use it.
"""

import os

from django.conf import settings

KEY_VARIABLE_SUFFIXES = ("_API_KEY", "_TOKEN")
# Every variable routerweb reads (routerweb/settings.py, manage.py, `make run`); tests/test_secrets.py
# checks that this covers settings.py and .env.example.
OWN_VARIABLES = frozenset(
    {
        "ALLOWED_HOSTS",
        "BEHIND_HTTPS_PROXY",
        "CACHE_KEY_PREFIX",
        "CSRF_TRUSTED_ORIGINS",
        "DATABASE_URL",
        "DB_POOL_MAX_SIZE",
        "DEBUG",
        "HOST",
        "LOG_CALLS_LEVEL",
        "LOG_FORMAT",
        "LOG_LEVEL",
        "PORT",
        "PROMETHEUS_MULTIPROC_DIR",
        "REDIS_URL",
        "SECRET_KEY",
        "SECURE_COOKIES",
        "SECURE_HSTS_INCLUDE_SUBDOMAINS",
        "SECURE_HSTS_PRELOAD",
        "SECURE_HSTS_SECONDS",
        "SECURE_SSL_REDIRECT",
        "WORKERS",
    }
)
OWN_PREFIXES = ("ROUTERWEB_", "DJANGO_")


def api_key_env_refusal(name: str) -> str | None:
    """Why the variable `name` may not hold a provider key, or None when it may."""
    if name in OWN_VARIABLES or name.startswith(OWN_PREFIXES):
        return f"{name} is one of routerweb's own settings, never a provider key"
    if name.endswith(KEY_VARIABLE_SUFFIXES) or name in settings.ROUTERWEB_KEY_VARIABLES:
        return None
    suffixes = " or ".join(KEY_VARIABLE_SUFFIXES)
    return f"{name} is not a key variable: use a name ending in {suffixes}, or add it to ROUTERWEB_KEY_VARIABLES"


def provider_api_key(name: str) -> str | None:
    """The key in the variable `name`, or None when there is none: no name, the variable unset or
    empty, or a name `api_key_env_refusal` refuses (its value is never read)."""
    if not name or api_key_env_refusal(name) is not None:
        return None
    return os.environ.get(name) or None
