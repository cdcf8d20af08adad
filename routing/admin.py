from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse

from .models import ApiKey, ModelEndpoint, PreferenceVote, Provider, Route, RouteTarget, UserRateLimit
from .providers.registry import api_format_choices
from .registry_rules import route_kinds_error, route_targets_error
from .services import api_key_create, api_key_revoke, route_cache_clear

NEW_KEY_SESSION = "routerweb_new_api_key"  # a key just created, until its page has shown it once


@admin.register(Provider)
class ProviderAdmin(admin.ModelAdmin):
    list_display = ["name", "api_format", "base_url", "api_key_env", "key_is_set", "read_timeout_s", "enabled"]
    list_filter = ["enabled", "api_format"]
    search_fields = ["name", "base_url"]

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        if db_field.name == "api_format":  # the formats the adapters serve (routing/providers/registry.py)
            return forms.TypedChoiceField(
                choices=api_format_choices(), label=db_field.verbose_name, required=False, empty_value="openai"
            )
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    @admin.display(description="key set", boolean=True)
    def key_is_set(self, provider: Provider) -> bool:
        # Only whether the variable is set in this process; its value is never read into a page.
        return provider.api_key_is_set


@admin.register(ModelEndpoint)
class ModelEndpointAdmin(admin.ModelAdmin):
    """The registry's view of a model; billing/admin.py extends it with prices and unpriced calls."""

    list_display = ["name", "kind", "provider", "upstream_model", "context_window", "enabled"]
    list_filter = ["enabled", "kind", "provider"]
    search_fields = ["name", "upstream_model"]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("provider")


class RouteTargetFormSet(forms.BaseInlineFormSet):
    """The route's rules that span its targets (routing/registry_rules.py, as for the registry file)."""

    def clean(self):
        super().clean()
        kept = [
            form
            for form in self.forms
            if form.cleaned_data.get("model") and not (self.can_delete and self._should_delete_form(form))
        ]
        problem = route_targets_error(len(kept)) or route_kinds_error(
            (form.cleaned_data["model"].name, form.cleaned_data["model"].kind) for form in kept
        )
        if problem:
            raise ValidationError(problem)


class RouteTargetInline(admin.TabularInline):
    model = RouteTarget
    formset = RouteTargetFormSet
    extra = 1
    fields = ["position", "model", "weight"]
    autocomplete_fields = ["model"]


@admin.register(Route)
class RouteAdmin(admin.ModelAdmin):
    list_display = ["name", "strategy", "target_list", "cache_ttl_s", "cache_shared", "description"]
    search_fields = ["name"]
    inlines = [RouteTargetInline]
    actions = ["clear_cache"]

    @admin.action(description="Clear the selected routes' cached answers")
    def clear_cache(self, request, queryset):
        for route in queryset:
            route_cache_clear(route=route)
        self.message_user(request, "Cleared: no cached answer of these routes is served any more.", messages.SUCCESS)

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("targets__model")

    @admin.display(description="targets")
    def target_list(self, route: Route) -> str:
        return " → ".join(t.model.name for t in route.targets.all())


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = [
        "prefix",
        "name",
        "user",
        "reads_dashboard",
        "rpm_limit",
        "tpm_limit",
        "created_at",
        "revoked_at",
        "calls_total",
    ]
    list_filter = [("revoked_at", admin.EmptyFieldListFilter), "reads_dashboard"]
    search_fields = ["name", "prefix", "user__username"]
    autocomplete_fields = ["user"]
    filter_horizontal = ["allowed_models", "allowed_routes"]
    readonly_fields = ["prefix", "created_at"]
    actions = ["revoke"]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("user").annotate(n_calls=Count("calls"))

    @admin.display(description="calls", ordering="n_calls")
    def calls_total(self, key: ApiKey) -> int:
        return key.n_calls

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["user", "name", "reads_dashboard", "rpm_limit", "tpm_limit", "allowed_models", "allowed_routes"]
        return [
            "prefix",
            "user",
            "name",
            "reads_dashboard",
            "rpm_limit",
            "tpm_limit",
            "allowed_models",
            "allowed_routes",
            "created_at",
            "revoked_at",
        ]

    def save_model(self, request, obj, form, change):
        if change:
            return super().save_model(request, obj, form, change)
        created, raw_key = api_key_create(user=obj.user, name=obj.name, reads_dashboard=obj.reads_dashboard)
        if obj.rpm_limit is not None or obj.tpm_limit is not None:
            created.rpm_limit, created.tpm_limit = obj.rpm_limit, obj.tpm_limit
            created.save(update_fields=["rpm_limit", "tpm_limit"])
        obj.pk, obj.prefix, obj.key_hash, obj.created_at = (
            created.pk,
            created.prefix,
            created.key_hash,
            created.created_at,
        )
        obj._state.adding = False
        request._routerweb_new_key = raw_key

    def response_add(self, request, obj, post_url_continue=None):
        # Redirect after the POST, so that reloading the page cannot create another key. The raw key
        # waits in the session only until that page is shown once (never in messages or a URL).
        request.session[NEW_KEY_SESSION] = {"pk": obj.pk, "key": request._routerweb_new_key}
        return HttpResponseRedirect(reverse("admin:routing_apikey_created", args=[obj.pk]))

    def get_urls(self):
        created = path(
            "<int:pk>/created/", self.admin_site.admin_view(self.created_view), name="routing_apikey_created"
        )
        return [created, *super().get_urls()]

    def created_view(self, request, pk: int):
        """The new key, shown once: a second visit (a reload) says it cannot be shown again."""
        key = get_object_or_404(ApiKey, pk=pk)
        if not self.has_view_or_change_permission(request, key):
            raise PermissionDenied
        waiting = request.session.get(NEW_KEY_SESSION) or {}
        raw_key = None
        if waiting.get("pk") == key.pk:
            raw_key = request.session.pop(NEW_KEY_SESSION)["key"]
        context = {
            **self.admin_site.each_context(request),
            "key": key,
            "raw_key": raw_key,
            "opts": self.opts,
            "title": "Copy your new API key" if raw_key else "API key created",
        }
        return TemplateResponse(request, "admin/routing/apikey/created.html", context)  # never cached: admin_view

    @admin.action(description="Revoke selected keys")
    def revoke(self, request, queryset):
        for key in queryset.filter(revoked_at__isnull=True):
            api_key_revoke(key=key)
        self.message_user(request, "Revoked. The keys are refused from now on, on every worker.", messages.SUCCESS)


@admin.register(UserRateLimit)
class UserRateLimitAdmin(admin.ModelAdmin):
    """A user's limits over all their keys and the playground; keys have their own on the key."""

    list_display = ["user", "rpm_limit", "tpm_limit"]
    search_fields = ["user__username"]
    autocomplete_fields = ["user"]
    list_select_related = ["user"]


@admin.register(PreferenceVote)
class PreferenceVoteAdmin(admin.ModelAdmin):
    """Votes are facts recorded by the playground: listed and searchable, never added or edited by hand."""

    list_display = ["created_at", "user", "chosen", "chosen_model", "compared_names"]
    list_filter = ["chosen_model"]
    search_fields = ["user__username", "chosen"]
    list_select_related = ["user", "chosen_model"]
    date_hierarchy = "created_at"

    @admin.display(description="compared")
    def compared_names(self, vote: PreferenceVote) -> str:
        return " vs ".join(vote.compared)

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
