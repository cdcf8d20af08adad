"""What a call asked and answered, stored only when an admin opted in, and the rules that opt in.

`CallBody` is a table of its own keyed by request id, so that the call row stays narrow: most calls
have no body. Its values were redacted and bounded before they were spooled (billing/call_bodies.py),
and the row writer stores a body in the same transaction as its call row. `BodyStorageRule` says
which calls get one (billing/body_policy.py); the rules are part of the registry snapshot.
"""

from django.conf import settings
from django.db import models
from django.db.models import Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from routing.models import ApiKey, Route


class CallBody(models.Model):
    """The request and the answer of one call (`request_id` is the `Call`'s).

    `request` is `{"messages": [...], "parameters": {...}}` as the client sent them (redacted and
    bounded); `answer` the answer's text (a stream's assembled text), `tool_calls` the answer's tool
    calls. A value cut to the size limit ends with a visible marker and sets its `*_truncated` flag.
    """

    created_at = models.DateTimeField(default=timezone.now, db_index=True)  # the call's; retention deletes by it
    request_id = models.CharField(max_length=40)  # unique: see Meta.constraints
    request = models.JSONField(default=dict)
    answer = models.TextField(blank=True)
    tool_calls = models.JSONField(default=list, blank=True)
    request_truncated = models.BooleanField(default=False)
    answer_truncated = models.BooleanField(default=False)

    class Meta:
        verbose_name = "call body"
        constraints = [models.UniqueConstraint(fields=["request_id"], name="call_body_request_id_unique")]

    def __str__(self) -> str:
        return f"body of {self.request_id}"

    @property
    def messages(self) -> list:
        messages = self.request.get("messages") if isinstance(self.request, dict) else None
        return messages if isinstance(messages, list) else []

    @property
    def parameters(self) -> dict:
        parameters = self.request.get("parameters") if isinstance(self.request, dict) else None
        return parameters if isinstance(parameters, dict) else {}


class BodyStorage(models.TextChoices):
    OFF = "off", "off: never store bodies"
    ALL = "all", "all calls"
    FAILED = "failed", "only failed calls"


class BodyStorageRule(models.Model):
    """Whether calls of one scope get their bodies stored: everyone's (no user, route or key), one
    user's, one route's (the name the client asked for) or one API key's.

    The most specific rule that applies wins (key, then user, then route, then the global one), except
    that a user or key whose rule is "off" never has a body stored, whatever a route says. Without
    any rule nothing is stored.
    """

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    route = models.OneToOneField(Route, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    api_key = models.OneToOneField(ApiKey, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    storage = models.CharField(max_length=6, choices=BodyStorage.choices, default=BodyStorage.OFF)

    class Meta:
        verbose_name = "body storage rule"
        constraints = [
            models.CheckConstraint(
                condition=(
                    models.Q(user__isnull=True, route__isnull=True)
                    | models.Q(user__isnull=True, api_key__isnull=True)
                    | models.Q(route__isnull=True, api_key__isnull=True)
                ),
                name="body_rule_one_scope",
                violation_error_message="Choose at most one of user, route and API key (none: the global rule).",
            ),
            # Each link is unique by itself; this makes the global rule (all three empty) unique too.
            models.UniqueConstraint(
                Coalesce("user", Value(0)),
                Coalesce("route", Value(0)),
                Coalesce("api_key", Value(0)),
                name="body_rule_one_per_scope",
                violation_error_message="There is a global rule already: change that one instead.",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.scope}: {self.get_storage_display()}"

    @property
    def scope(self) -> str:
        if self.api_key_id:
            return f"API key {self.api_key}"
        if self.user_id:
            return f"user {self.user}"
        if self.route_id:
            return f"route {self.route}"
        return "everyone"
