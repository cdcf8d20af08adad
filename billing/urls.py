from django.urls import path

from . import views

app_name = "billing"

urlpatterns = [
    path("", views.DashboardView.as_view(), name="dashboard"),
    path("data.json", views.DashboardDataView.as_view(), name="dashboard-data"),
    path("whatif.json", views.WhatIfDataView.as_view(), name="dashboard-whatif"),
    path("export.csv", views.DashboardExportView.as_view(), name="dashboard-export"),
]
