"""URLs of the browser playground (/playground/), served by Django's full stack (sessions, CSRF, auth)."""

from django.urls import path

from .views import playground

app_name = "playground"

# routing.views.playground.csrf_failure answers in JSON for the views named "api-…".
urlpatterns = [
    path("", playground.playground_page, name="page"),
    path("api/chat", playground.chat, name="api-chat"),
    path("api/calls/<str:request_id>", playground.call_detail, name="api-call"),
    path("api/stored/<str:request_id>", playground.stored_call, name="api-stored"),
    path("api/votes", playground.votes, name="api-votes"),
]
