"""The call log's pages: the list of calls (`/calls/`) and one call's page (`/calls/<request_id>/`).

Both need a session login and follow the dashboard's access rule (billing/dashboard/access.py): a
viewer sees their own calls, the spend permission sees all. A request id that does not exist and one
the viewer may not see both answer the same 404.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.mixins import LoginRequiredMixin
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views import View

from .dashboard.call_detail import call_badges, call_conversation, call_for_viewer
from .dashboard.recent import CallNarrowing, recent_calls
from .forms import (
    ESTIMATED_CHOICES,
    STATUS_CHOICES,
    CallListFilterForm,
)
from .views import _filters, _query, filters_context

CALLS_PER_PAGE = 50


class CallListView(LoginRequiredMixin, View):
    template_name = "billing/calls.html"

    def get(self, request: HttpRequest) -> HttpResponse:
        form = CallListFilterForm(request.GET, viewer=request.user)
        valid = form.is_valid()
        context = filters_context(request, form, nav="calls")
        context.update(status_choices=STATUS_CHOICES, estimated_choices=ESTIMATED_CHOICES)
        if not valid:
            return render(request, self.template_name, context, status=400)
        try:
            filters = _filters(request.user, form)
        except PermissionDenied:  # the form offers only what the viewer may see: this is a crafted URL
            raise Http404 from None
        data = form.cleaned_data
        narrowing = CallNarrowing(status=data["status"], estimated=data["estimated"], search=data["q"])
        page = recent_calls(filters=filters, before=data["before"], limit=CALLS_PER_PAGE, narrowing=narrowing)
        context.update(
            filters=filters,
            page=page,
            paged=data["before"] is not None,
            query=_query(form),
            older_query=_query(form, before=page.next_cursor.encode()) if page.next_cursor else "",
        )
        return render(request, self.template_name, context)


class CallDetailView(LoginRequiredMixin, View):
    template_name = "billing/call.html"

    def get(self, request: HttpRequest, request_id: str) -> HttpResponse:
        call = call_for_viewer(viewer=request.user, request_id=request_id)
        if call is None:
            raise Http404("No such call.")
        context = {
            "nav": "calls",
            "call": call,
            "badges": call_badges(call),
            # priced at the input rate (billing/pricing.py): neither read from nor written to the cache
            "uncached_prompt_tokens": max(call.prompt_tokens - call.cached_tokens - call.cache_write_tokens, 0),
            "conversation": call_conversation(call),
            "tz": settings.ROUTERWEB_DASHBOARD_TZ,
        }
        return render(request, self.template_name, context)
