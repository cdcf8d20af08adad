"""The registry file's `rate_limits` section: per-user and per-key limits (routing/ratelimit.py).

    rate_limits:
      users:
        - user: alice                 # username
          requests_per_minute: 60     # absent or null: unlimited
          tokens_per_minute: 200000
      keys:
        - key: rw-AbCdEfG             # the key's prefix, as the admin shows it
          requests_per_minute: 10     # absent or null: the default for every key, if any

Import sets the limits of the users and keys listed and leaves the others alone; export lists every
user and key that has a limit.
"""

from typing import Any

from django.contrib.auth import get_user_model

from .models import ApiKey, UserRateLimit

ENTRY_KEYS = {"users": "user", "keys": "key"}
LIMIT_KEYS = ("requests_per_minute", "tokens_per_minute")
FIELDS = {"requests_per_minute": "rpm_limit", "tokens_per_minute": "tpm_limit"}


def rate_limits_errors(section: Any) -> list[str]:
    """What is wrong with the section (users and keys must exist); [] when it is fine."""
    if section is None:
        return []
    if not isinstance(section, dict) or set(section) - set(ENTRY_KEYS):
        return ["rate_limits: must be a mapping with users and/or keys"]
    errors = []
    for part, name_key in ENTRY_KEYS.items():
        entries = section.get(part) or []
        if not isinstance(entries, list):
            errors.append(f"rate_limits.{part}: must be a list")
            continue
        for index, entry in enumerate(entries):
            where = f"rate_limits.{part}[{index}]"
            if not isinstance(entry, dict) or not isinstance(entry.get(name_key), str):
                errors.append(f"{where}: must be a mapping with {name_key!r}")
                continue
            errors += [f"{where}: unknown key {k!r}" for k in sorted(set(entry) - {name_key, *LIMIT_KEYS})]
            for key in LIMIT_KEYS:
                value = entry.get(key)
                if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                    errors.append(f"{where}: {key} must be a positive integer or null")
            if _target(part, entry[name_key]) is None:
                errors.append(f"{where}: no {'user' if part == 'users' else 'API key'} {entry[name_key]!r}")
    return errors


def rate_limits_apply(section: Any) -> list[str]:
    """Set the limits (inside the import's transaction); the labels of what changed."""
    changed = []
    for part, name_key in ENTRY_KEYS.items():
        for entry in (section or {}).get(part) or []:
            target = _target(part, entry[name_key])
            if part == "users":
                target, _ = UserRateLimit.objects.get_or_create(user=target)
            values = {FIELDS[key]: entry.get(key) for key in LIMIT_KEYS}
            if any(getattr(target, field) != value for field, value in values.items()):
                for field, value in values.items():
                    setattr(target, field, value)
                target.save()
                changed.append(f"rate limits of {part[:-1]} {entry[name_key]}")
    return changed


def rate_limits_export() -> dict[str, Any] | None:
    users = [
        {"user": limit.user.get_username(), **_limits(limit)}
        for limit in UserRateLimit.objects.select_related("user").order_by("user__username")
        if limit.rpm_limit or limit.tpm_limit
    ]
    keys = [
        {"key": key.prefix, **_limits(key)}
        for key in ApiKey.objects.filter(revoked_at__isnull=True).order_by("prefix")
        if key.rpm_limit or key.tpm_limit
    ]
    data = {name: entries for name, entries in (("users", users), ("keys", keys)) if entries}
    return data or None


def _limits(obj) -> dict[str, int]:
    return {key: getattr(obj, FIELDS[key]) for key in LIMIT_KEYS if getattr(obj, FIELDS[key])}


def _target(part: str, name: str):
    if part == "users":
        return get_user_model().objects.filter(username=name).first()
    return ApiKey.objects.filter(prefix=name, revoked_at__isnull=True).first()
