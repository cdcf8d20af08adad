"""The spend dashboard: the page, its JSON document and the CSV export, all with the same filters.

The page needs a session login. It embeds the charts' JSON document (the one `data.json` answers),
so it draws without a second request and reads every aggregate once. The JSON and CSV endpoints also
accept `Authorization: Bearer <API key>` for a key created with the read scope (the key's user is the
viewer), so teams can pull their numbers from scripts; they answer errors in the OpenAI error shape.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urlencode

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.mixins import LoginRequiredMixin
from django.contrib.auth.models import AbstractBaseUser
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views import View

from routing.auth import api_key_authenticate_now
from routing.errors import ApiError, error_response

from .dashboard.access import CallFilters, ForbiddenFilter, call_filters_for, viewer_sees_everyone
from .dashboard.document import dashboard_data, dashboard_document, dashboard_summary
from .dashboard.export import call_export_csv
from .dashboard.names import filter_choices
from .dashboard.presentation import budget_bar, compact_count, kpi_changes
from .dashboard.recent import recent_calls
from .dashboard.whatif import what_if, what_if_document
from .forms import DEFAULT_RANGE, RANGE_CHOICES, DashboardFilterForm, WhatIfForm, time_zone_choices
from .models import QuarantinedRow


def _filters(viewer, form: DashboardFilterForm) -> CallFilters:
    data = form.cleaned_data
    return call_filters_for(
        viewer=viewer,
        start=data["start_at"],
        end=data["end_at"],
        user=data.get("user"),
        api_key=data.get("key"),
        model=data.get("model"),
        route=data.get("route"),
        tz=data["tz"],
        kind=data.get("kind") or None,
    )


def _query(form: DashboardFilterForm, **extra: str) -> str:
    """The filters as a query string (without the page cursor), plus `extra`."""
    params = {k: v for k, v in form.data.items() if k in form.fields and k != "before" and v}
    params.update(extra)
    return urlencode(params)


def filters_context(request: HttpRequest, form: DashboardFilterForm, *, nav: str) -> dict[str, Any]:
    """What the filter fields (billing/_filter_fields.html) need, for a `form` already validated."""
    selected_user = form.cleaned_data.get("user") if form.is_valid() else None
    return {
        "nav": nav,
        "all_users": viewer_sees_everyone(request.user),
        "form": form,
        "range_choices": RANGE_CHOICES,
        "default_range": DEFAULT_RANGE,
        "time_zones": time_zone_choices(),
        "default_tz": settings.ROUTERWEB_DASHBOARD_TZ,
        "choices": filter_choices(viewer=request.user, user_id=selected_user.pk if selected_user else None),
    }


class DashboardView(LoginRequiredMixin, View):
    template_name = "billing/dashboard.html"

    def get(self, request: HttpRequest) -> HttpResponse:
        form = DashboardFilterForm(request.GET, viewer=request.user)
        valid = form.is_valid()
        context = filters_context(request, form, nav="dashboard")
        all_users = context["all_users"]
        if not valid:
            return render(request, self.template_name, context, status=400)
        filters = _filters(request.user, form)
        page = recent_calls(filters=filters, before=form.cleaned_data["before"])
        summary = dashboard_summary(filters=filters, all_users=all_users)
        query = _query(form)
        totals = summary.totals
        context.update(
            changes=kpi_changes(totals=totals, previous=summary.previous),
            previous_days=(form.cleaned_data["last_day"] - form.cleaned_data["first_day"]).days + 1,
            filters=filters,
            totals=totals,
            chat_totals=totals.of_kind("chat"),
            embeddings_totals=totals.of_kind("embeddings"),
            tokens_in=compact_count(totals.prompt_tokens),
            tokens_out=compact_count(totals.completion_tokens),
            tokens_cached=compact_count(totals.cached_tokens),
            tokens_cache_written=compact_count(totals.cache_write_tokens),
            budgets=[budget_bar(use=use) for use in summary.budgets],
            budget_count=summary.budget_count,
            chart_data=dashboard_document(summary=summary),
            page=page,
            paged=form.cleaned_data["before"] is not None,
            query=query,
            older_query=_query(form, before=page.next_cursor.encode()) if page.next_cursor else "",
            unpriced_url=_unpriced_url(form),
            quarantined=QuarantinedRow.objects.count() if request.user.is_staff else 0,
        )
        return render(request, self.template_name, context)


def _unpriced_url(form: DashboardFilterForm) -> str:
    data = form.cleaned_data
    params = {
        "unpriced__exact": "1",
        "created_at__gte": data["start_at"].isoformat(),
        "created_at__lt": data["end_at"].isoformat(),
    }
    if data.get("model"):
        params["model__id__exact"] = str(data["model"].pk)
    return f"{reverse('admin:billing_call_changelist')}?{urlencode(params)}"


# ---------------------------------------------------------------------------- JSON and CSV


def _form_error(form: DashboardFilterForm | WhatIfForm) -> HttpResponse:
    param, errors = next(iter(form.errors.items()))
    message = f"Invalid '{param}': {' '.join(errors)}" if param != "__all__" else " ".join(errors)
    return error_response(ApiError(400, message, code="invalid_filter", param=None if param == "__all__" else param))


class _ApiView(View):
    """Resolves the viewer (session or Bearer API key) and the filters, or answers the error."""

    def get(self, request: HttpRequest) -> HttpResponse:
        try:
            viewer = _api_viewer(request)
        except ApiError as error:
            return error_response(error)
        form = DashboardFilterForm(request.GET, viewer=viewer)
        if not form.is_valid():
            return _form_error(form)
        try:
            filters = _filters(viewer, form)
        except ForbiddenFilter as exc:
            return error_response(ApiError(403, str(exc), code="forbidden", param=exc.param))
        return self.respond(request, viewer, form, filters)

    def respond(self, request, viewer, form, filters) -> HttpResponse:
        raise NotImplementedError


def _api_viewer(request: HttpRequest) -> AbstractBaseUser:
    """The session's user, else the owner of the request's API key if that key has the read scope;
    raises ApiError 401 (no or unusable key) or 403 (a key without the read scope)."""
    if request.user.is_authenticated:
        return request.user
    authorization = request.headers.get("Authorization", "")
    if not authorization:
        message = "Log in, or send an API key with the read scope as 'Authorization: Bearer <key>'."
        raise ApiError(401, message, code="unauthorized")
    key = api_key_authenticate_now(authorization)
    if not key.reads_dashboard:
        message = "This API key has no read scope: create one with it (admin, or createapikey --read-dashboard)."
        raise ApiError(403, message, code="key_without_read_scope")
    viewer = get_user_model().objects.filter(pk=key.user_id, is_active=True).first()
    if viewer is None:  # deleted or deactivated since the key was read
        raise ApiError(401, "Invalid or revoked API key, or its user is inactive.", code="invalid_api_key")
    return viewer


class DashboardDataView(_ApiView):
    def respond(self, request, viewer, form, filters) -> HttpResponse:
        return JsonResponse(dashboard_data(filters=filters, all_users=viewer_sees_everyone(viewer)))


class WhatIfDataView(_ApiView):
    """`whatif.json?<filters>&whatif=<model>`: the filtered calls re-priced at that model's prices."""

    def respond(self, request, viewer, form, filters) -> HttpResponse:
        question = WhatIfForm(request.GET)
        if not question.is_valid():
            return _form_error(question)
        data = question.cleaned_data
        return JsonResponse(what_if_document(what_if(filters=filters, chosen=data["whatif"], price=data["price"])))


class DashboardExportView(_ApiView):
    def respond(self, request, viewer, form, filters) -> HttpResponse:
        chunks = call_export_csv(filters=filters)
        # Under ASGI a synchronous iterator would be read to the end into memory first: hand it over
        # chunk by chunk instead. The test client (WSGI) takes the synchronous one as it is.
        content = _async_chunks(chunks) if isinstance(request, ASGIRequest) else chunks
        response = StreamingHttpResponse(content, content_type="text/csv; charset=utf-8")
        first, last = form.cleaned_data["first_day"], form.cleaned_data["last_day"]
        response["Content-Disposition"] = f'attachment; filename="routerweb-calls-{first}-{last}.csv"'
        response["Cache-Control"] = "no-store"
        return response


async def _async_chunks(chunks: Iterator[str]) -> AsyncIterator[str]:
    # thread_sensitive: every step runs on the same thread, which owns the database cursor.
    step = sync_to_async(next, thread_sensitive=True)
    try:
        while (chunk := await step(chunks, None)) is not None:
            yield chunk
    finally:
        await sync_to_async(chunks.close, thread_sensitive=True)()
