from django.contrib import admin, messages
from django.db import DatabaseError
from django.db.models import Count, Exists, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.urls import reverse
from django.utils.html import format_html

from routing.admin import ModelEndpointAdmin
from routing.models import ModelEndpoint

from .calls import quarantined_rows_retry
from .models import BodyStorageRule, Budget, BudgetAllowance, Call, CallBody, Price, QuarantinedRow
from .money import usd_text


def _usd_column(field: str, description: str):
    """An admin column (or read-only field) showing the money field `field` as billing/money.py writes
    it ("$25.00", "$0.000348"), sorted by the field itself: never the column's 12 raw decimals."""

    @admin.display(description=description, ordering=field)
    def column(self, obj) -> str:
        value = getattr(obj, field)
        return "—" if value is None else usd_text(value)

    column.__name__ = f"{field}_text"
    return column


class PriceInline(admin.TabularInline):
    model = Price
    extra = 0
    fields = ["input_per_mtok", "output_per_mtok", "cached_input_per_mtok", "effective_from", "source"]
    readonly_fields = ["source"]
    ordering = ["-effective_from"]


class PricedFilter(admin.SimpleListFilter):
    title = "price"
    parameter_name = "priced"

    def lookups(self, request, model_admin):
        return [("no", "no price (unpriced)"), ("yes", "priced")]

    def queryset(self, request, queryset):
        if self.value() in ("yes", "no"):
            return queryset.filter(prices__isnull=self.value() == "no").distinct()
        return queryset


# Counted per model with the (model, created_at) index, not by joining every call.
unpriced_calls_count = (
    Call.objects.filter(model=OuterRef("pk"), unpriced=True)
    .order_by()
    .values("model")
    .annotate(n=Count("*"))
    .values("n")
)


admin.site.unregister(ModelEndpoint)


@admin.register(ModelEndpoint)
class PricedModelEndpointAdmin(ModelEndpointAdmin):
    """The registry's model admin, with the model's prices and its unpriced calls."""

    list_display = [*ModelEndpointAdmin.list_display, "has_price", "unpriced_calls"]
    list_filter = [PricedFilter, *ModelEndpointAdmin.list_filter]
    inlines = [*ModelEndpointAdmin.inlines, PriceInline]

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(
                priced=Exists(Price.objects.filter(model=OuterRef("pk"))),
                n_unpriced_calls=Coalesce(Subquery(unpriced_calls_count), 0),
            )
        )

    @admin.display(description="price", boolean=True, ordering="priced")
    def has_price(self, model: ModelEndpoint) -> bool:
        return model.priced

    @admin.display(description="unpriced calls", ordering="n_unpriced_calls")
    def unpriced_calls(self, model: ModelEndpoint) -> int:
        return model.n_unpriced_calls


@admin.register(Price)
class PriceAdmin(admin.ModelAdmin):
    list_display = ["model", "input_text", "output_text", "cached_input_text", "effective_from", "source"]
    list_filter = ["source", "model__provider"]
    search_fields = ["model__name"]
    autocomplete_fields = ["model"]
    date_hierarchy = "effective_from"

    input_text = _usd_column("input_per_mtok", "input per Mtok")
    output_text = _usd_column("output_per_mtok", "output per Mtok")
    cached_input_text = _usd_column("cached_input_per_mtok", "cached input per Mtok")


@admin.register(Call)
class CallAdmin(admin.ModelAdmin):
    list_display = [
        "created_at",
        "request_id",
        "page_link",
        "user",
        "requested",
        "model",
        "status",
        "prompt_tokens",
        "completion_tokens",
        "cost_text",
        "latency_ms",
        "attempt_count",
    ]
    # `created_at` and `unpriced` make the dashboard's "unpriced calls" link (a date range) work.
    list_filter = ["status", "unpriced", "usage_estimated", "stream", "model", "created_at"]
    search_fields = ["request_id", "requested"]
    list_select_related = ["user", "model"]
    show_full_result_count = False
    cost_text = _usd_column("cost_usd", "cost")
    readonly_fields = ["page_link"]

    @admin.display(description="page")
    def page_link(self, call: Call) -> str:
        return format_html('<a href="{}">call page</a>', reverse("calls:detail", args=[call.request_id]))

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(BodyStorageRule)
class BodyStorageRuleAdmin(admin.ModelAdmin):
    """Which calls get their request and answer stored (billing/body_policy.py says how rules combine)."""

    list_display = ["scope", "storage"]
    list_filter = ["storage"]
    raw_id_fields = ["user", "route", "api_key"]
    fields = ["storage", "user", "route", "api_key"]


@admin.register(CallBody)
class CallBodyAdmin(admin.ModelAdmin):
    list_display = ["created_at", "request_id", "page_link", "request_truncated", "answer_truncated"]
    search_fields = ["request_id"]
    date_hierarchy = "created_at"
    show_full_result_count = False
    page_link = CallAdmin.page_link

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        # Calls are the record the rollups, budgets and exports are built from.
        return False


@admin.register(QuarantinedRow)
class QuarantinedRowAdmin(admin.ModelAdmin):
    """Call rows the row writer could not store (billing/calls.py): read them, fix the cause, retry."""

    list_display = ["created_at", "request_id", "short_error", "tries"]
    search_fields = ["request_id"]
    readonly_fields = ["created_at", "request_id", "error", "tries", "line"]
    actions = ["retry"]

    @admin.display(description="error")
    def short_error(self, obj: QuarantinedRow) -> str:
        return obj.error[:120]

    @admin.action(description="Retry storing the selected rows", permissions=["delete"])
    def retry(self, request, queryset):
        try:
            stored = quarantined_rows_retry(list(queryset))
        except DatabaseError as exc:
            self.message_user(request, f"The database is unavailable ({exc}); nothing was retried.", messages.ERROR)
            return
        left = queryset.count()
        level = messages.SUCCESS if not left else messages.WARNING
        self.message_user(request, f"{stored} stored; {left} still in quarantine (see their error).", level)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class BudgetAllowanceInline(admin.TabularInline):
    """What workers hold of the budget right now (part of `reserved_usd`); billing/budgets.py manages them."""

    model = BudgetAllowance
    fields = readonly_fields = ["id", "amount_text", "period_start", "expires_at"]
    extra = 0
    can_delete = False
    verbose_name_plural = "allowances held by workers (counted in reserved)"

    amount_text = _usd_column("amount_usd", "amount")

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Budget)
class BudgetAdmin(admin.ModelAdmin):
    list_display = ["__str__", "limit_text", "soft_threshold_pct", "spent_text", "reserved_text", "period_start"]
    autocomplete_fields = ["user", "api_key"]
    readonly_fields = ["period_start", "spent_text", "reserved_text"]
    fields = ["user", "api_key", "limit_usd", "soft_threshold_pct", "period_start", "spent_text", "reserved_text"]
    limit_text = _usd_column("limit_usd", "limit")
    spent_text = _usd_column("spent_usd", "spent")
    reserved_text = _usd_column("reserved_usd", "reserved")
    inlines = [BudgetAllowanceInline]
