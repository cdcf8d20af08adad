"""API key authentication: the one check for every place a routerweb key is accepted.

A key authenticates when it is in `api_keys_load()`'s set: not revoked, owned by an active user.
`/v1` checks it against the worker's registry snapshot (which holds that set and is reloaded on
every worker within a second of any key or user change, routing/signals.py); the dashboard's JSON
and CSV, served by Django's full stack, read the one key from the database. Both go through
`api_key_authenticate`, so both accept and refuse exactly the same keys with the same errors.
"""

import hmac
from collections.abc import Mapping

from .errors import ApiError
from .registry import api_keys_load
from .services import api_key_hash
from .snapshot import KeySnap


def api_key_authenticate(keys_by_hash: Mapping[str, KeySnap], authorization: str) -> KeySnap:
    """The usable key named by an `Authorization: Bearer rw-…` header among `keys_by_hash`, or ApiError 401."""
    digest = api_key_hash(_bearer_token(authorization))
    key = keys_by_hash.get(digest)
    # The dict lookup finds the candidate; compare_digest keeps the final check constant-time.
    if key is None or not hmac.compare_digest(digest, key.key_hash):
        raise ApiError(401, "Invalid or revoked API key, or its user is inactive.", code="invalid_api_key")
    return key


def api_key_authorization(*, x_api_key: str, authorization: str) -> str:
    """The `Authorization` value a request authenticates with: Anthropic's clients send the key as
    `x-api-key` (the `anthropic` SDK with `api_key`, Claude Code with ANTHROPIC_API_KEY), others as
    `Authorization: Bearer` (ANTHROPIC_AUTH_TOKEN); `x-api-key` wins when both are sent."""
    return f"Bearer {x_api_key}" if x_api_key else authorization


def api_key_authenticate_now(authorization: str) -> KeySnap:
    """`api_key_authenticate` against the database as it is now (one query; for synchronous views)."""
    keys = api_keys_load(key_hash=api_key_hash(_bearer_token(authorization)))
    return api_key_authenticate(keys, authorization)


def _bearer_token(authorization: str) -> str:
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        message = "Missing API key: send 'Authorization: Bearer rw-…' (or, on /v1/messages, 'x-api-key: rw-…')."
        raise ApiError(401, message, code="missing_api_key")
    return token
