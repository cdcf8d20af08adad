from django.contrib import admin
from django.urls import path
from django.views.generic import RedirectView

admin.site.site_header = "routerweb"
admin.site.site_title = "routerweb admin"

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="admin:index", permanent=False)),
    path("admin/", admin.site.urls),
]
