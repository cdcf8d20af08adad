"""Middleware of the page stack (pages, admin, playground and dashboard endpoints) for input no view can take.

- `nul_bytes_rejected`: a NUL byte in the path, the query string or a form field is refused with a
  400 in OpenAI's error shape, before any view or database sees it. No name, id or text routerweb
  stores may contain one (PostgreSQL refuses it in every text column), so it is always a mistake
  or an attack, and answering it once here spares every view from checking.
- `AdminLookupErrorsMiddleware`: an admin list filtered by something it cannot take (an unknown
  field, a value of the wrong type, `?created_at__year=0`, a number past the column's range)
  answers 400 naming the query, with a link to the whole list.
"""

import logging
from collections.abc import Callable

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.contrib.admin.views.main import ERROR_FLAG
from django.core.exceptions import ValidationError
from django.db import DataError
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, QueryDict
from django.utils.decorators import sync_and_async_middleware
from django.utils.html import format_html

from routing.errors import ApiError, error_response

logger = logging.getLogger("routerweb.requests")

NUL = "\x00"
FORM_CONTENT_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})
# What a lookup value the database or Python cannot take raises when its query runs.
LOOKUP_VALUE_ERRORS = (ValueError, OverflowError, DataError, ValidationError)


@sync_and_async_middleware
def nul_bytes_rejected(get_response: Callable) -> Callable:
    """Answer 400 (code `nul_byte`, `param` naming where) to a request with a NUL byte in its URL or form."""
    if iscoroutinefunction(get_response):

        async def middleware(request: HttpRequest) -> HttpResponse:
            return nul_byte_refusal(request) or await get_response(request)

    else:

        def middleware(request: HttpRequest) -> HttpResponse:
            return nul_byte_refusal(request) or get_response(request)

    return middleware


def nul_byte_refusal(request: HttpRequest) -> HttpResponse | None:
    """The 400 for a request with a NUL byte in its path, query string or form fields; None for any other."""
    place = _nul_byte_place(request)
    if place is None:
        return None
    message = f"The request has a NUL byte (%00) in {place}; routerweb accepts none anywhere."
    return error_response(ApiError(400, message, code="nul_byte", param=place))


def _nul_byte_place(request: HttpRequest) -> str | None:
    if NUL in request.path:
        return "path"
    forms = [request.GET]
    if request.method == "POST" and request.content_type in FORM_CONTENT_TYPES:
        forms.append(request.POST)
    return next((name for form in forms if (name := _nul_field(form)) is not None), None)


def _nul_field(form: QueryDict) -> str | None:
    for name, values in form.lists():
        if NUL in name or any(NUL in value for value in values):
            return name.replace(NUL, "%00")
    return None


class AdminLookupErrorsMiddleware:
    """An admin change list refusing its filters answers 400 naming them, never 500 (nor Django's redirect).

    Two ways a filter fails: Django's admin finds the field or the value's type wrong while building
    the query, and redirects to the unfiltered list with `?e=1` (made a 400 here, so that a script
    or a bookmark does not silently get every row); or the value meets a limit of Python or the
    database only when the query runs, and raises (`LOOKUP_VALUE_ERRORS`, answered 400 here).
    """

    sync_capable = async_capable = True

    def __init__(self, get_response: Callable):
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest):
        if iscoroutinefunction(self):
            return self._acall(request)
        return self._redirect_refused(request, self.get_response(request))

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        return self._redirect_refused(request, await self.get_response(request))

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not (_filtered_admin_list(request) and isinstance(exception, LOOKUP_VALUE_ERRORS)):
            return None
        reason = str(exception).splitlines()[0] if str(exception) else type(exception).__name__
        return _filters_refused(request, reason)

    def _redirect_refused(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        if (
            request.method == "GET"
            and response.status_code == 302
            and response.get("Location") == f"{request.path}?{ERROR_FLAG}=1"
            and _filtered_admin_list(request)
        ):
            return _filters_refused(request, "the list has no such filter, or the value is not of its type")
        return response


def _filtered_admin_list(request: HttpRequest) -> bool:
    match = request.resolver_match
    return (
        match is not None
        and match.namespace == "admin"
        and (match.url_name or "").endswith("_changelist")
        and bool(request.GET)
    )


def _filters_refused(request: HttpRequest, reason: str) -> HttpResponse:
    query = request.GET.urlencode()
    logger.info("admin list %s refused its filters %s: %s", request.path, query, reason)
    return HttpResponseBadRequest(
        format_html(
            "<h1>Bad request (400)</h1><p>This list cannot be filtered by <code>{}</code>: {}.</p>"
            '<p><a href="{}">Show the whole list</a></p>',
            query,
            reason,
            request.path,
        )
    )
