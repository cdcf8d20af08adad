"""Prices and the one-row-per-request call record.

Money is `Decimal` everywhere. Prices are USD per 1M tokens with 6 decimal places, so a call's cost
(tokens × price / 1,000,000) is exact with 12 decimal places.
"""

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone

from routing.models import ApiKey, ModelEndpoint, Provider

from .money import usd_text
from .pricing import price_cached_error

PRICE_DIGITS = dict(max_digits=18, decimal_places=6)
PRICE_FIELD = dict(**PRICE_DIGITS, validators=[MinValueValidator(0)])
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
    cache_write_per_mtok = models.DecimalField(
        "cache write $/1M tokens",
        null=True,
        blank=True,
        help_text="Input tokens written to the provider's cache (Anthropic's cache_creation_input_tokens). "
        "Empty: they cost the input price.",
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
        prices = f"in {usd_text(self.input_per_mtok)} / out {usd_text(self.output_per_mtok)} per Mtok"
        return f"{self.model}: {prices} from {self.effective_from:%Y-%m-%d}"

    def clean(self) -> None:
        error = price_cached_error(input_per_mtok=self.input_per_mtok, cached_input_per_mtok=self.cached_input_per_mtok)
        if error:
            raise ValidationError({"cached_input_per_mtok": error})


def _call_link(to: type[models.Model] | str, **options) -> models.ForeignKey:
    """A link from a call row: cleared when its target is deleted, and no database constraint."""
    options.setdefault("related_name", "calls")
    return models.ForeignKey(to, null=True, blank=True, on_delete=models.SET_NULL, db_constraint=False, **options)


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
    request_id = models.CharField(max_length=40)  # unique: see Meta.constraints
    # A call outlives what it names, and the recorder inserts every request's row: the links are not
    # foreign key constraints, whose per-row checks doubled the database's work per call (measured in
    # docs/benchmarks.md). Storing a batch clears links to deleted rows with one query per link instead
    # (billing/calls.py), and deleting a user, key, model or provider still sets its calls' link to
    # NULL. The user, key and model need no index of their own: composite indexes below lead with
    # them. The provider keeps one, for that SET NULL when a provider is deleted.
    user = _call_link(settings.AUTH_USER_MODEL, related_name="+", db_index=False)
    api_key = _call_link(ApiKey, db_index=False)
    requested = models.CharField(max_length=100, help_text="The model or route name the client asked for.")
    model = _call_link(ModelEndpoint, db_index=False)
    provider = _call_link(Provider)
    kind = models.CharField(
        max_length=12,
        choices=ModelEndpoint.Kind.choices,
        default=ModelEndpoint.Kind.CHAT,
        help_text="The endpoint called: chat (completions) or embeddings; kept as it was at call time.",
    )
    status = models.CharField(max_length=10, choices=Status.choices)
    http_status = models.PositiveSmallIntegerField()
    error_code = models.CharField(max_length=40, blank=True)
    stream = models.BooleanField(default=False)
    prompt_tokens = models.PositiveIntegerField(default=0)
    cached_tokens = models.PositiveIntegerField(default=0, help_text="The part of prompt_tokens read from the cache.")
    cache_write_tokens = models.PositiveIntegerField(
        default=0, help_text="The part of prompt_tokens written to the provider's cache (priced at its own rate)."
    )
    completion_tokens = models.PositiveIntegerField(default=0)
    usage_estimated = models.BooleanField(default=False)
    estimate_reason = models.CharField(
        max_length=40, blank=True, help_text="Why the tokens are estimated, e.g. no_usage or invalid_usage:<field>."
    )
    cost_usd = models.DecimalField(
        max_digits=COST_MAX_DIGITS, decimal_places=COST_DECIMAL_PLACES, null=True, blank=True
    )
    unpriced = models.BooleanField(default=False)
    saved_usd = models.DecimalField(
        max_digits=COST_MAX_DIGITS,
        decimal_places=COST_DECIMAL_PLACES,
        null=True,
        blank=True,
        help_text="A cache hit's saving: the exact cost of the call whose answer it replayed (null: unpriced).",
    )
    # Price provenance: the price row that produced `cost_usd` and its rates as they were used, so
    # that a cost can be explained even after its price row is gone. Null: no price was used (no
    # model answered, or the model had none). A cache hit keeps the replayed call's price: the one
    # that priced `saved_usd` (billing/price_provenance.py). A plain id, no link: nothing reads calls
    # by price, and an index or a constraint would be paid by every insert.
    price_id = models.BigIntegerField(null=True, blank=True, help_text="The Price row used (kept if it is deleted).")
    price_input_per_mtok = models.DecimalField(null=True, blank=True, **PRICE_DIGITS)
    price_cached_input_per_mtok = models.DecimalField(null=True, blank=True, **PRICE_DIGITS)
    price_cache_write_per_mtok = models.DecimalField(null=True, blank=True, **PRICE_DIGITS)
    price_output_per_mtok = models.DecimalField(null=True, blank=True, **PRICE_DIGITS)
    price_effective_from = models.DateTimeField(null=True, blank=True)
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
        # A constraint rather than `unique=True`, which on PostgreSQL adds a second index for LIKE
        # queries that nothing runs: every index is paid for by every call's insert.
        constraints = [models.UniqueConstraint(fields=["request_id"], name="call_request_id_unique")]
        # The dashboard shows everyone's spend, calls and CSV only with this permission (not the staff flag).
        permissions = [("view_all_spend", "Can see every user's spend, calls and CSV on the dashboard")]

    def __str__(self) -> str:
        answered = self.model.name if self.model_id and self.model else "no model"
        return f"{self.request_id} {self.requested} → {answered} {self.status}"


class QuarantinedRow(models.Model):
    """A call row the row writer could not store, kept with the error so that nothing is lost silently.

    A batch that fails is split until the rows that fail are isolated; those come here and the rest
    of the batch is stored. `line` is the row as it was spooled (JSON); an admin can retry it once
    the cause is fixed (billing/admin.py), which stores it and deletes this entry.
    """

    created_at = models.DateTimeField(default=timezone.now)
    request_id = models.CharField(max_length=40, blank=True, db_index=True)
    line = models.TextField(help_text="The row as spooled, in JSON.")
    error = models.TextField()
    tries = models.PositiveIntegerField(default=1)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "quarantined call row"

    def __str__(self) -> str:
        return f"{self.request_id or '(no request id)'}: {self.error[:80]}"


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
                violation_error_message="Choose either a user or an API key for this budget, not both and not neither.",
            ),
            models.UniqueConstraint(
                fields=["user"],
                condition=models.Q(user__isnull=False),
                name="budget_one_per_user",
                violation_error_message="This user already has a budget: change that one instead.",
            ),
            models.UniqueConstraint(
                fields=["api_key"],
                condition=models.Q(api_key__isnull=False),
                name="budget_one_per_api_key",
                violation_error_message="This API key already has a budget: change that one instead.",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.label}: {usd_text(self.limit_usd)}/month"

    @property
    def label(self) -> str:
        return f"user {self.user}" if self.user_id else f"API key {self.api_key}"


class BudgetAllowance(models.Model):
    """A share of a budget that one worker process reserved in one write and spends call by call.

    Its `amount_usd` is counted in the budget's `reserved_usd` until the calls drawn from it settle
    (their costs move to `spent_usd`), or until its worker hands back what is left (idle, or at
    shutdown) or another worker reclaims it after `expires_at` (its worker died): billing/budgets.py.
    """

    id = models.UUIDField(primary_key=True)
    budget = models.ForeignKey(Budget, on_delete=models.CASCADE, related_name="allowances")
    period_start = models.DateField()
    amount_usd = models.DecimalField(max_digits=COST_MAX_DIGITS, decimal_places=COST_DECIMAL_PLACES)
    expires_at = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return f"{usd_text(self.amount_usd)} of budget {self.budget_id} until {self.expires_at:%H:%M:%S}"


# ------------------------------------------------------------------------------ rollups
#
# Upper bounds (ms, inclusive) of the latency and TTFT histogram buckets kept in each rollup row; a
# last, unbounded bucket counts what is slower. Percentiles are read from these counts, so they are
# reported as the upper bound of the bucket the percentile falls in. Changing the bounds needs a
# migration (the columns) and `rebuild_rollups` (the counts).
HISTOGRAM_BOUNDS_MS = (
    50, 100, 150, 200, 300, 400, 500, 750, 1000, 1500, 2000, 3000,
    4000, 5000, 7500, 10000, 15000, 20000, 30000, 45000, 60000, 90000, 120000,
)  # fmt: skip
LATENCY_COLUMNS = tuple(f"latency_le_{b}" for b in HISTOGRAM_BOUNDS_MS) + ("latency_over",)
TTFT_COLUMNS = tuple(f"ttft_le_{b}" for b in HISTOGRAM_BOUNDS_MS) + ("ttft_over",)


class CallRollup(models.Model):
    """Call counters per hour (and per day) and per user, API key, model, requested name, status and kind
    (chat or embeddings, as the call row keeps it).

    Maintained in the same transaction as the call rows (billing/rollups.py `rollups_add`, an atomic
    upsert that adds to the counters) and rebuilt from the raw rows by `rollups_rebuild`; both give
    identical rows. The dashboard reads only these rows for its totals and charts.

    The dimensions are plain ids, not foreign keys, with 0 for "none": NULLs would never match the
    unique key, so every upsert of a call without a model would add a row instead of a count. A key
    belongs to one user, so (user, key) adds no cardinality over keys alone: a row exists per period
    bucket for each (key, requested name, answering model, status) actually seen in it.

    Money is an integer count of picodollars (1e-12 USD, the resolution of `Call.cost_usd`): sums are
    exact on every database, including SQLite, whose decimals are floats.
    """

    class Period(models.TextChoices):
        HOUR = "hour"
        DAY = "day"

    pk = models.CompositePrimaryKey(
        "period", "bucket_start", "user_id", "api_key_id", "model_id", "requested", "status", "kind"
    )
    period = models.CharField(max_length=4, choices=Period.choices)
    bucket_start = models.DateTimeField(help_text="Start of the UTC hour or day.")
    user_id = models.BigIntegerField(default=0, help_text="0: no user.")
    api_key_id = models.BigIntegerField(default=0, help_text="0: no API key (playground).")
    model_id = models.BigIntegerField(default=0, help_text="The model that answered; 0: none did.")
    requested = models.CharField(max_length=100)
    status = models.CharField(max_length=10, choices=Call.Status.choices)
    kind = models.CharField(max_length=12, choices=ModelEndpoint.Kind.choices, default=ModelEndpoint.Kind.CHAT)

    calls = models.BigIntegerField(default=0)
    fallback_calls = models.BigIntegerField(default=0, help_text="Answered by a candidate other than the first.")
    unpriced_calls = models.BigIntegerField(default=0)
    estimated_calls = models.BigIntegerField(default=0, help_text="Calls whose tokens are estimates.")
    prompt_tokens = models.BigIntegerField(default=0)
    cached_tokens = models.BigIntegerField(default=0)
    cache_write_tokens = models.BigIntegerField(default=0)
    completion_tokens = models.BigIntegerField(default=0)
    cost_pusd = models.BigIntegerField("cost (picodollars)", default=0, help_text="Priced calls only.")
    saved_pusd = models.BigIntegerField(
        "saved (picodollars)", default=0, help_text="What cache hits saved: the cost of the calls they replayed."
    )
    # The tokens of unpriced calls (counted in the token totals above, never in the cost): the what-if
    # view re-prices priced calls only, so that both its sides count the same calls.
    unpriced_prompt_tokens = models.BigIntegerField(default=0)
    unpriced_cached_tokens = models.BigIntegerField(default=0)
    unpriced_cache_write_tokens = models.BigIntegerField(default=0)
    unpriced_completion_tokens = models.BigIntegerField(default=0)

    # No other index: the primary key serves every dashboard read. A read is a range of one period's
    # buckets, and the filters (user, key, model, requested) are later columns of the key, checked in
    # the index while it is scanned. One index per filter cost more than it saved (measured on 1M
    # calls: writing the 294K hour rows took 7.5 s instead of 2.5 s, and every upsert pays the same
    # way, while filtered 30-day reads were only 20-40 ms faster).

    def __str__(self) -> str:
        return f"{self.period} {self.bucket_start:%Y-%m-%d %H:%M} {self.requested} {self.status}: {self.calls} calls"


# One integer column per histogram bucket, added in a loop so that the bounds above are the only list.
for _column in LATENCY_COLUMNS + TTFT_COLUMNS:
    CallRollup.add_to_class(_column, models.IntegerField(default=0))
del _column


from .body_models import BodyStorageRule, CallBody  # noqa: E402,F401 (models of this app, kept in their own module)
