"""The model registry: providers, the models they serve, routes over those models, and API keys.

Secrets never live here: a provider holds only the *name* of the environment variable that
contains its key (`api_key_env`), and an API key is stored as a SHA-256 hash.
"""

import re

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator, RegexValidator, URLValidator
from django.db import models

from .registry_rules import route_kinds_error, validate_weight
from .secrets import api_key_env_refusal, provider_api_key

NAME_VALIDATOR = RegexValidator(
    r"^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,99}$",
    "Use letters, digits and . _ : / @ - (up to 100 characters, starting with a letter or digit).",
)
ENV_VAR_VALIDATOR = RegexValidator(
    r"^[A-Za-z_][A-Za-z0-9_]*$", "An environment variable name: letters, digits and _, not starting with a digit."
)
HTTP_URL_VALIDATOR = URLValidator(schemes=["http", "https"], message="Enter an http:// or https:// URL.")
LOCAL_PATH_PATTERN = re.compile(r"^/[A-Za-z0-9._~/-]*$")


def validate_base_url(value: str) -> None:
    """An http(s) URL, or a path ("/demo/v1"): a provider served by routerweb itself, reached at the
    address each call came in on (routing/upstream.py); and never the chat endpoint itself."""
    if value.startswith("/"):
        if not LOCAL_PATH_PATTERN.match(value) or value.startswith("//"):
            raise ValidationError("Enter an http:// or https:// URL, or a path on routerweb itself such as /demo/v1.")
    else:
        HTTP_URL_VALIDATOR(value)
    if value.rstrip("/").endswith("/chat/completions"):
        raise ValidationError(
            "Enter the API root without /chat/completions (e.g. https://api.openai.com/v1): routerweb appends it."
        )


class TimestampedModel(models.Model):
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True


def validate_api_format(value: str) -> None:
    from .providers.registry import adapters

    if value not in adapters():
        raise ValidationError(f"Unknown API format {value!r}; known: {', '.join(adapters())}.")


class Provider(TimestampedModel):
    """An upstream at `base_url` that speaks the API format `api_format` (routing/providers/)."""

    name = models.CharField(max_length=100, unique=True, validators=[NAME_VALIDATOR])
    api_format = models.CharField(
        "API format",
        max_length=32,
        default="openai",
        validators=[validate_api_format],
        help_text="How routerweb talks to it: openai (OpenAI-compatible chat completions) or anthropic "
        "(Anthropic's Messages API).",
    )
    base_url = models.CharField(
        max_length=500,
        validators=[validate_base_url],
        help_text="The API root, e.g. https://api.openai.com/v1 (the gateway appends /chat/completions), or a "
        "path such as /demo/v1 for a provider served by routerweb itself.",
    )
    api_key_env = models.CharField(
        "API key variable",
        max_length=100,
        blank=True,
        validators=[ENV_VAR_VALIDATOR],
        help_text="Name of the environment variable holding the key (never the key itself): it must end in "
        "_API_KEY or _TOKEN, or be listed in ROUTERWEB_KEY_VARIABLES. Empty for servers that need no key, "
        "such as a local Ollama.",
    )
    connect_timeout_s = models.FloatField(default=5.0, validators=[MinValueValidator(0.1)])
    read_timeout_s = models.FloatField(default=60.0, validators=[MinValueValidator(0.1)])
    enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def save(self, *args, **kwargs):
        self.base_url = self.base_url.rstrip("/")
        super().save(*args, **kwargs)

    def clean(self) -> None:
        errors = {}
        refusal = self.api_key_env and api_key_env_refusal(self.api_key_env)
        if refusal:
            errors["api_key_env"] = f"{refusal}."
        twin = self.name and Provider.objects.filter(name__iexact=self.name).exclude(pk=self.pk).first()
        if twin and twin.name != self.name:
            errors["name"] = f"A provider is already named {twin.name!r}; names may not differ only in case."
        if errors:
            raise ValidationError(errors)

    @property
    def api_key_is_set(self) -> bool:
        """Whether the key variable is usable and set in this process's environment (the value is never exposed)."""
        return not self.api_key_env or provider_api_key(self.api_key_env) is not None


class ModelEndpoint(TimestampedModel):
    """A model as clients name it (`name`), served by a provider under `upstream_model`; `kind` says
    which endpoint calls it (/v1/chat/completions or /v1/embeddings): a call on the other is refused."""

    class Kind(models.TextChoices):
        CHAT = "chat", "chat: /v1/chat/completions"
        EMBEDDINGS = "embeddings", "embeddings: /v1/embeddings"

    name = models.CharField(max_length=100, unique=True, validators=[NAME_VALIDATOR])
    kind = models.CharField(
        max_length=12,
        choices=Kind.choices,
        default=Kind.CHAT,
        help_text="What the model is for. A route's targets must all be of one kind.",
    )
    provider = models.ForeignKey(Provider, on_delete=models.PROTECT, related_name="models")
    upstream_model = models.CharField(
        max_length=200, blank=True, help_text="The id the provider expects; defaults to the public name."
    )
    context_window = models.PositiveIntegerField(null=True, blank=True)
    max_output_tokens = models.PositiveIntegerField(
        null=True, blank=True, help_text="Default output cap, used to reserve budget when a call sets no max_tokens."
    )
    enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["name"]
        verbose_name = "model"

    def __str__(self) -> str:
        return self.name

    def save(self, *args, **kwargs):
        if not self.upstream_model:
            self.upstream_model = self.name
        super().save(*args, **kwargs)

    def clean(self) -> None:
        if self.name and Route.objects.filter(name=self.name).exists():
            raise ValidationError({"name": f"A route is already named {self.name!r}; models and routes share names."})
        if self.kind == self.Kind.EMBEDDINGS and self.provider_id is not None:
            self._check_provider_embeds()
        if self.pk is not None and self.kind:
            self._check_kind_fits_routes()

    def _check_provider_embeds(self) -> None:
        from .providers.registry import adapters

        adapter = adapters().get(self.provider.api_format)
        if adapter is not None and not adapter.embeds:
            message = f"The provider's API format ({self.provider.api_format}) has no embeddings endpoint."
            raise ValidationError({"kind": message})

    def _check_kind_fits_routes(self) -> None:
        """A new kind must still match the other targets of every route the model is in."""
        clash = (
            RouteTarget.objects.filter(route__targets__model_id=self.pk)
            .exclude(model_id=self.pk)
            .exclude(model__kind=self.kind)
            .select_related("route", "model")
            .first()
        )
        if clash is not None:
            problem = route_kinds_error([(self.name, self.kind), (clash.model.name, clash.model.kind)])
            raise ValidationError({"kind": f"In route {clash.route.name!r}: {problem}"})


class Route(TimestampedModel):
    """A name clients can use instead of a model; it expands to ordered candidate models."""

    class Strategy(models.TextChoices):
        ORDERED = "ordered", "ordered: try targets in order"
        WEIGHTED = "weighted", "weighted: first target picked at random by weight, the rest in order"

    name = models.CharField(max_length=100, unique=True, validators=[NAME_VALIDATOR])
    strategy = models.CharField(max_length=16, choices=Strategy.choices, default=Strategy.ORDERED)
    description = models.CharField(max_length=200, blank=True)
    cache_ttl_s = models.PositiveIntegerField(
        "response cache TTL (s)",
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="Answer identical requests from the response cache for this many seconds. Empty: only "
        "requests that ask for the cache are cached.",
    )
    cache_shared = models.BooleanField(
        "cache shared by all users",
        default=False,
        help_text="Cached answers are reused across users of this route. Off: each user has their own entries.",
    )
    # Part of every cache key of the route: the admin's "clear cached answers" moves it on.
    cache_generation = models.PositiveIntegerField(default=0, editable=False)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if self.name and ModelEndpoint.objects.filter(name=self.name).exists():
            raise ValidationError({"name": f"A model is already named {self.name!r}; models and routes share names."})


class RouteTarget(models.Model):
    route = models.ForeignKey(Route, on_delete=models.CASCADE, related_name="targets")
    model = models.ForeignKey(ModelEndpoint, on_delete=models.PROTECT, related_name="route_targets")
    position = models.PositiveSmallIntegerField(default=0)
    weight = models.PositiveIntegerField(
        default=1, validators=[validate_weight], help_text="Share of first picks for weighted routes (1 or more)."
    )

    class Meta:
        ordering = ["route", "position", "id"]
        constraints = [
            models.UniqueConstraint(fields=["route", "model"], name="routetarget_unique_model_per_route"),
        ]

    def __str__(self) -> str:
        return f"{self.route} → {self.model}"


API_KEY_PREFIX = "rw-"
API_KEY_PATTERN = re.compile(r"^rw-[A-Za-z0-9_-]{20,100}$")


class ApiKey(models.Model):
    """A routerweb key. Only the SHA-256 hex digest of the secret is stored; `prefix` is for recognition."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100, default="default")
    prefix = models.CharField(max_length=16, editable=False)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    allowed_models = models.ManyToManyField(
        ModelEndpoint, blank=True, related_name="+", help_text="Empty (with no routes either): every model and route."
    )
    allowed_routes = models.ManyToManyField(Route, blank=True, related_name="+")
    reads_dashboard = models.BooleanField(
        "read scope",
        default=False,
        help_text="Also accepted by the dashboard's JSON and CSV (its owner's spend and calls). Off: /v1 only.",
    )
    rpm_limit = models.PositiveIntegerField(
        "requests per minute", null=True, blank=True, help_text="Empty: the default for every key (if any)."
    )
    tpm_limit = models.PositiveIntegerField(
        "tokens per minute", null=True, blank=True, help_text="Empty: the default for every key (if any)."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.name})"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class UserRateLimit(models.Model):
    """A user's rate limits over all their API keys and the playground (empty: unlimited)."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="rate_limit")
    rpm_limit = models.PositiveIntegerField("requests per minute", null=True, blank=True)
    tpm_limit = models.PositiveIntegerField("tokens per minute", null=True, blank=True)

    class Meta:
        verbose_name = "user rate limit"

    def __str__(self) -> str:
        return f"rate limit of {self.user}"


class PreferenceVote(TimestampedModel):
    """A compare-mode verdict: of the answers in one comparison, the user marked `chosen`'s answer as the better one.

    `compared` holds the model or route names in column order and `request_ids` the call row of each
    column, in the same order. `chosen_model` is the model that actually answered the chosen column (a
    route resolves to one of its targets), so preferences can be counted per model. There is one vote
    per comparison (`comparison_key`: its sorted request ids); voting again changes it.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="preference_votes")
    compared = models.JSONField(help_text="The model or route names compared, in column order.")
    chosen = models.CharField(max_length=100, help_text="The name of the preferred column.")
    chosen_model = models.ForeignKey(
        ModelEndpoint, null=True, blank=True, on_delete=models.SET_NULL, related_name="preference_votes"
    )
    request_ids = models.JSONField(help_text="The call of each column, in column order.")
    comparison_key = models.CharField(max_length=200, editable=False)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["user", "comparison_key"], name="preferencevote_one_per_comparison"),
        ]
        indexes = [models.Index(fields=["chosen_model", "created_at"], name="vote_chosen_model_created_idx")]

    def __str__(self) -> str:
        return f"{self.user} preferred {self.chosen} over {', '.join(n for n in self.compared if n != self.chosen)}"


class RegistryVersion(models.Model):
    """One row (id 1) whose `counter` goes up in the same transaction as every change to the registry.

    Workers compare it with the version of their registry snapshot (routing/registry_version.py): a
    change made by any process on any machine is seen by reading this row, with or without Redis.
    """

    counter = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"registry version {self.counter}"
