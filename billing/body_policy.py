"""Which calls get their bodies stored: the body storage rules, as the registry snapshot holds them.

The rules (`BodyStorageRule`) are loaded with the rest of billing's snapshot part, so the decision for
a call reads no database. The most specific rule that is set wins: the API key's, then the user's,
then the route's (the name the client asked for), then the global one; a user or key whose rule is
"off" never gets a body stored, whatever a route or the global rule says. No rule: nothing stored.
"""

from dataclasses import dataclass, field

from .body_models import BodyStorage

FAILED_STATUSES = frozenset({"error", "rejected"})


@dataclass(frozen=True)
class BodyPolicy:
    everyone: str | None = None
    by_user: dict[int, str] = field(default_factory=dict)
    by_route: dict[str, str] = field(default_factory=dict)  # route name -> storage
    by_key: dict[int, str] = field(default_factory=dict)

    def storage_for(self, *, user_id: int | None, key_id: int | None, requested: str) -> str:
        """off, all or failed for a call of this user with this key asking for `requested`."""
        by_key, by_user = self.by_key.get(key_id), self.by_user.get(user_id)
        if BodyStorage.OFF in (by_key, by_user):
            return BodyStorage.OFF
        for storage in (by_key, by_user, self.by_route.get(requested), self.everyone):
            if storage is not None:
                return storage
        return BodyStorage.OFF

    def stores(self, *, user_id: int | None, key_id: int | None, requested: str, status: str) -> bool:
        """Whether a call of this user, key, requested name and status has its body stored."""
        if not (self.everyone or self.by_user or self.by_route or self.by_key):
            return False  # the default: no rule at all, nothing to look up
        storage = self.storage_for(user_id=user_id, key_id=key_id, requested=requested)
        return storage == BodyStorage.ALL or (storage == BodyStorage.FAILED and status in FAILED_STATUSES)


def body_policy_load() -> BodyPolicy:
    """Every body storage rule, from the database (synchronous; one query)."""
    from .body_models import BodyStorageRule

    policy = BodyPolicy()
    rules = BodyStorageRule.objects.values_list("user_id", "route__name", "api_key_id", "storage")
    for user_id, route_name, key_id, storage in rules:
        if key_id is not None:
            policy.by_key[key_id] = storage
        elif user_id is not None:
            policy.by_user[user_id] = storage
        elif route_name is not None:
            policy.by_route[route_name] = storage
        else:
            policy = BodyPolicy(storage, policy.by_user, policy.by_route, policy.by_key)
    return policy
