from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.generic import RedirectView

admin.site.site_header = "routerweb"
admin.site.site_title = "routerweb admin"

urlpatterns = [
    path("", RedirectView.as_view(url="/playground/", permanent=False)),
    path("admin/", admin.site.urls),
    path("dashboard/", include("billing.urls")),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("playground/", include("routing.playground_urls")),
]
