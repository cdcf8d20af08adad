from django.contrib import admin

from .models import Call, Price


@admin.register(Price)
class PriceAdmin(admin.ModelAdmin):
    list_display = ["model", "input_per_mtok", "output_per_mtok", "cached_input_per_mtok", "effective_from", "source"]
    list_filter = ["source", "model__provider"]
    search_fields = ["model__name"]
    autocomplete_fields = ["model"]
    date_hierarchy = "effective_from"


@admin.register(Call)
class CallAdmin(admin.ModelAdmin):
    list_display = [
        "created_at",
        "request_id",
        "user",
        "requested",
        "model",
        "status",
        "prompt_tokens",
        "completion_tokens",
        "cost_usd",
        "latency_ms",
        "attempt_count",
    ]
    list_filter = ["status", "unpriced", "usage_estimated", "stream", "model"]
    search_fields = ["request_id", "requested"]
    list_select_related = ["user", "model"]
    show_full_result_count = False

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
