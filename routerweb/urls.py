from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.generic import RedirectView

from . import ops
from .login_throttle import ThrottledAdminAuthenticationForm, ThrottledAuthenticationForm

admin.site.site_header = "routerweb"
admin.site.site_title = "routerweb admin"
admin.site.login_form = ThrottledAdminAuthenticationForm

urlpatterns = [
    path("", RedirectView.as_view(url="/playground/", permanent=False)),
    path("admin/", admin.site.urls),
    path("dashboard/", include("billing.urls")),
    path("calls/", include("billing.call_urls")),
    path(
        "accounts/login/", auth_views.LoginView.as_view(authentication_form=ThrottledAuthenticationForm), name="login"
    ),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("playground/", include("routing.playground_urls")),
    path("healthz", ops.healthz, name="healthz"),
    path("readyz", ops.readyz, name="readyz"),
    path("metrics", ops.metrics, name="metrics"),
]
