"""Settings read from the environment, checked in a fresh interpreter so that each variant really starts Django.

Every variable that matters is set explicitly (empty counts as set), so a developer's `.env`, which settings
reads without overwriting the environment, cannot change the outcome.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SETUP = "import json, django; django.setup(); from django.conf import settings; "
BASE_ENV = {"DJANGO_SETTINGS_MODULE": "routerweb.settings", "SECRET_KEY": "", "DEBUG": "0", "REDIS_URL": ""}


def start_django(code: str = SETUP, **variables: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **BASE_ENV, **variables}
    return subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False
    )


def test_starting_without_secret_key_and_debug_off_fails_clearly():
    result = start_django()

    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert "SECRET_KEY is not set" in result.stderr


def test_empty_debug_counts_as_off():
    result = start_django(DEBUG="")

    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr


def test_starting_without_secret_key_in_debug_uses_a_throwaway_key():
    result = start_django(SETUP + "print(settings.DEBUG, settings.SECRET_KEY)", DEBUG="1")

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "insecure-development-key-do-not-use-in-production"]


def test_secret_key_from_the_environment_is_used_with_debug_off():
    result = start_django(SETUP + "print(settings.DEBUG, settings.SECRET_KEY)", SECRET_KEY="from-the-environment")

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "from-the-environment"]


def test_redis_url_selects_the_redis_cache():
    code = SETUP + "print(json.dumps(settings.CACHES))"

    result = start_django(code, SECRET_KEY="x", REDIS_URL="redis://127.0.0.1:6379/3", CACHE_KEY_PREFIX="rw-t")

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:6379/3",
            "KEY_PREFIX": "rw-t",
        }
    }


def test_without_redis_url_the_cache_is_local_memory():
    result = start_django(SETUP + "print(json.dumps(settings.CACHES))", SECRET_KEY="x")

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["default"]["BACKEND"] == "django.core.cache.backends.locmem.LocMemCache"


def readme_production_variables() -> dict[str, str]:
    """The variables of the README's "Production" block, with a real random SECRET_KEY."""
    readme = (REPO_ROOT / "README.md").read_text()
    block = readme.split("### Production", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    variables = dict(line.split("=", 1) for line in block.splitlines() if line.strip())
    assert variables["SECRET_KEY"].startswith("<")  # a placeholder in the README
    variables["SECRET_KEY"] = secrets.token_urlsafe(50)
    return variables


def test_check_deploy_is_clean_with_the_readmes_production_variables():
    variables = readme_production_variables()
    env = {**os.environ, **BASE_ENV, **variables}
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_without_them_check_deploy_names_what_is_missing():
    env = {**os.environ, **BASE_ENV, "SECRET_KEY": secrets.token_urlsafe(50)}
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy"], env=env, cwd=REPO_ROOT, capture_output=True, text=True
    )
    for warning in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert warning in result.stdout + result.stderr


def test_log_format_json_writes_one_json_object_per_line():
    code = (
        SETUP
        + "import logging; logging.getLogger('routerweb.calls').info('call', extra={'call': {'request_id': 'r1'}})"
    )

    result = start_django(code, SECRET_KEY="x", LOG_FORMAT="json")

    assert result.returncode == 0, result.stderr
    line = json.loads(result.stderr.strip().splitlines()[-1])
    assert (line["logger"], line["event"], line["request_id"]) == ("routerweb.calls", "call", "r1")


def test_an_unknown_log_format_fails_clearly():
    result = start_django(SECRET_KEY="x", LOG_FORMAT="xml")

    assert result.returncode != 0
    assert "LOG_FORMAT must be plain or json" in result.stderr
