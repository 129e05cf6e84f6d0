"""Top-level URL configuration."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_not_required
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from portal import health, metrics, oidc, schema  # noqa: F401  (schema registers the API token scheme)
from portal import views as account_views

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="catalog:preset-list"), name="home"),
    path("accounts/login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/profile/", account_views.profile, name="profile"),
    path("accounts/profile/tokens/", account_views.token_create, name="token-create"),
    path("accounts/profile/tokens/<int:token_id>/revoke/", account_views.token_revoke, name="token-revoke"),
    path("admin/", admin.site.urls),
    path("catalog/", include("catalog.urls")),
    path("workspaces/", include("workspaces.urls")),
    path("api/", include("catalog.api_urls")),
    path("api/", include("workspaces.api_urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    # Probes and metrics (ProbeMiddleware answers them first; these entries name the routes and serve tests).
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", login_not_required(metrics.metrics_view), name="metrics"),
    # OpenID Connect sign-in; the views answer 404 unless OIDC is configured.
    path("oidc/authenticate/", oidc.AuthenticateView.as_view(), name="oidc_authentication_init"),
    path("oidc/callback/", oidc.CallbackView.as_view(), name="oidc_authentication_callback"),
]
