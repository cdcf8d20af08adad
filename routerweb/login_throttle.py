"""Throttled password logins, for the admin's login and the site's.

After `ROUTERWEB_LOGIN_FAILURES` failed logins for one username from one client address, that pair
is refused, with a message saying so and for how long, until `ROUTERWEB_LOGIN_LOCKOUT_S` seconds
after the first of them; a refused attempt does not check the password at all. Counting per
(username, address) rather than per username keeps an attacker from locking a user out from
elsewhere. The counters live in the shared cache (Redis with `REDIS_URL`), so every worker agrees.
"""

import hashlib

from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.http import HttpRequest


def login_failures_key(request: HttpRequest | None, username: str) -> str:
    """The cache key counting failures of `username` from the request's address."""
    address = request.META.get("REMOTE_ADDR", "") if request is not None else ""
    digest = hashlib.sha256(f"{address}|{username.casefold()}".encode()).hexdigest()[:32]
    return f"login-failures:{digest}"


def login_throttled(key: str) -> bool:
    return (cache.get(key) or 0) >= settings.ROUTERWEB_LOGIN_FAILURES


def login_failure_record(key: str) -> None:
    """Count one failure; the window starts at the first failure and is not extended by later ones."""
    cache.add(key, 0, timeout=settings.ROUTERWEB_LOGIN_LOCKOUT_S)
    try:
        cache.incr(key)
    except ValueError:  # expired between add and incr: this failure starts a new window
        cache.add(key, 1, timeout=settings.ROUTERWEB_LOGIN_LOCKOUT_S)


class LoginThrottleMixin:
    """For an AuthenticationForm: refuse a throttled (username, address) before checking the password."""

    def clean(self):
        key = login_failures_key(self.request, self.cleaned_data.get("username") or "")
        if login_throttled(key):
            minutes = max(1, round(settings.ROUTERWEB_LOGIN_LOCKOUT_S / 60))
            raise ValidationError(
                f"Too many failed logins for this username from your address. Try again in {minutes} minutes.",
                code="throttled",
            )
        try:
            return super().clean()
        except ValidationError:
            login_failure_record(key)
            raise


class ThrottledAuthenticationForm(LoginThrottleMixin, AuthenticationForm):
    pass


class ThrottledAdminAuthenticationForm(LoginThrottleMixin, AdminAuthenticationForm):
    pass
