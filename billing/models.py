"""Prices and the one-row-per-request call record.

Money is `Decimal` everywhere. Prices are USD per 1M tokens with 6 decimal places, so a call's cost
(tokens × price / 1,000,000) is exact with 12 decimal places.
"""

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone

from routing.models import ApiKey, ModelEndpoint, Provider

PRICE_FIELD = dict(max_digits=18, decimal_places=6, validators=[MinValueValidator(0)])
COST_MAX_DIGITS, COST_DECIMAL_PLACES = 24, 12


class Price(models.Model):
    """USD per 1M tokens for one model from `effective_from` on; rows are never rewritten, only added."""

    class Source(models.TextChoices):
        MANUAL = "manual", "entered by hand"
        GENAI_PRICES = "genai-prices", "synced from genai-prices"

    model = models.ForeignKey(ModelEndpoint, on_delete=models.CASCADE, related_name="prices")
    input_per_mtok = models.DecimalField("input $/1M tokens", **PRICE_FIELD)
    output_per_mtok = models.DecimalField("output $/1M tokens", **PRICE_FIELD)
    cached_input_per_mtok = models.DecimalField(
        "cached input $/1M tokens",
        null=True,
        blank=True,
        help_text="Empty: cached tokens cost the input price.",
        **PRICE_FIELD,
    )
    effective_from = models.DateTimeField(default=timezone.now)
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.MANUAL)

    class Meta:
        ordering = ["model", "-effective_from"]
        constraints = [
            models.UniqueConstraint(fields=["model", "effective_from"], name="price_unique_model_effective_from"),
        ]
        indexes = [models.Index(fields=["model", "effective_from"], name="price_model_effective_idx")]

    def __str__(self) -> str:
        return (
            f"{self.model}: in {self.input_per_mtok} / out {self.output_per_mtok} from {self.effective_from:%Y-%m-%d}"
        )


class Call(models.Model):
    """One row per request to the gateway or the playground, written once its outcome is known.

    `attempts` is the routing trace: one entry per candidate tried or skipped, in order.
    `cost_usd` is null when the answering model had no price (`unpriced`), never a made-up zero.
    """

    class Status(models.TextChoices):
        OK = "ok"
        ERROR = "error"
        REJECTED = "rejected"
        CACHE_HIT = "cache_hit"

    created_at = models.DateTimeField(default=timezone.now)
    request_id = models.CharField(max_length=40, unique=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    api_key = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="calls")
    requested = models.CharField(max_length=100, help_text="The model or route name the client asked for.")
    model = models.ForeignKey(ModelEndpoint, null=True, blank=True, on_delete=models.SET_NULL, related_name="calls")
    provider = models.ForeignKey(Provider, null=True, blank=True, on_delete=models.SET_NULL, related_name="calls")
    status = models.CharField(max_length=10, choices=Status.choices)
    http_status = models.PositiveSmallIntegerField()
    error_code = models.CharField(max_length=40, blank=True)
    stream = models.BooleanField(default=False)
    prompt_tokens = models.PositiveIntegerField(default=0)
    cached_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    usage_estimated = models.BooleanField(default=False)
    cost_usd = models.DecimalField(
        max_digits=COST_MAX_DIGITS, decimal_places=COST_DECIMAL_PLACES, null=True, blank=True
    )
    unpriced = models.BooleanField(default=False)
    latency_ms = models.PositiveIntegerField(default=0)
    ttft_ms = models.PositiveIntegerField(null=True, blank=True)
    overhead_ms = models.FloatField(default=0)
    attempt_count = models.PositiveSmallIntegerField(default=0)
    attempts = models.JSONField(default=list)
    client_disconnected = models.BooleanField(default=False)
    source = models.CharField(max_length=12, default="api")

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["created_at", "id"], name="call_created_idx"),
            models.Index(fields=["user", "created_at"], name="call_user_created_idx"),
            models.Index(fields=["api_key", "created_at"], name="call_key_created_idx"),
            models.Index(fields=["model", "created_at"], name="call_model_created_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.request_id} {self.requested} → {self.model_id} {self.status}"


class Budget(models.Model):
    """A monthly USD limit on a user's or an API key's spend.

    `spent_usd` (settled costs) and `reserved_usd` (worst cases of calls in flight) are this period's
    running totals, changed only by atomic UPDATEs in billing/budgets.py, so that concurrent calls on
    every worker can never reserve past `limit_usd` together. A new month starts them from zero.
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="budgets"
    )
    api_key = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.CASCADE, related_name="budgets")
    limit_usd = models.DecimalField("monthly limit (USD)", **PRICE_FIELD)
    soft_threshold_pct = models.PositiveSmallIntegerField(
        "soft threshold (%)",
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(100)],
        help_text="Optional: flag the budget once spend passes this share of the limit.",
    )
    period_start = models.DateField(editable=False, null=True)
    spent_usd = models.DecimalField(
        max_digits=COST_MAX_DIGITS, decimal_places=COST_DECIMAL_PLACES, default=0, editable=False
    )
    reserved_usd = models.DecimalField(
        max_digits=COST_MAX_DIGITS, decimal_places=COST_DECIMAL_PLACES, default=0, editable=False
    )

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(user__isnull=False, api_key__isnull=True)
                | models.Q(user__isnull=True, api_key__isnull=False),
                name="budget_user_xor_api_key",
            ),
            models.UniqueConstraint(
                fields=["user"], condition=models.Q(user__isnull=False), name="budget_one_per_user"
            ),
            models.UniqueConstraint(
                fields=["api_key"], condition=models.Q(api_key__isnull=False), name="budget_one_per_api_key"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.label}: ${self.limit_usd}/month"

    @property
    def label(self) -> str:
        return f"user {self.user}" if self.user_id else f"API key {self.api_key}"
