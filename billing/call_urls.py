from django.urls import path

from . import call_views

app_name = "calls"

urlpatterns = [
    path("", call_views.CallListView.as_view(), name="list"),
    path("<str:request_id>/", call_views.CallDetailView.as_view(), name="detail"),
]
