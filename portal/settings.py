"""Django settings for KAITO Portal, read from the environment (embedded defaults run without any)."""

from pathlib import Path

import environ

from portal.layers import redis_channel_layer

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
if env.bool("DJANGO_READ_DOT_ENV_FILE", default=False):
    environ.Env.read_env(BASE_DIR / ".env")

# GENERAL
# ------------------------------------------------------------------------------
DEBUG = env.bool("DJANGO_DEBUG", default=False)
# The fallback key only exists so that `make run` and the tests work out of the box; production
# settings (DJANGO_PRODUCTION=1) refuse to start without a real one.
PRODUCTION = env.bool("DJANGO_PRODUCTION", default=False)
SECRET_KEY = env("DJANGO_SECRET_KEY", default="" if PRODUCTION else "insecure-dev-key-change-me-" + "x" * 24)
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])
TIME_ZONE = "UTC"
USE_TZ = True
LANGUAGE_CODE = "en-us"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
ROOT_URLCONF = "portal.urls"
ASGI_APPLICATION = "portal.asgi.application"
WSGI_APPLICATION = None

# APPS
# ------------------------------------------------------------------------------
INSTALLED_APPS = [
    "daphne",  # first, so that runserver is the ASGI server (WebSockets, streaming)
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "channels",
    "rest_framework",
    "drf_spectacular",
    "django_htmx",
    "template_partials",
    "portal",
    "catalog",
    "workspaces",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Every page needs a login; public views opt out with @login_not_required (DRF views do it themselves).
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "portal.context_processors.portal",
            ],
        },
    }
]

# DATABASE
# ------------------------------------------------------------------------------
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
# Name the test database explicitly: ChannelsLiveServerTestCase's Daphne child otherwise derives
# "test_test_<name>" and every view it serves fails (tooling-recipes.md §3, gotcha 4).
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    DATABASES["default"]["TEST"] = {"NAME": str(BASE_DIR / "test_db.sqlite3")}
    # WAL lets the reconciler process read while the web process writes.
    DATABASES["default"].setdefault("OPTIONS", {})["init_command"] = "PRAGMA journal_mode=WAL;"
    DATABASES["default"]["OPTIONS"]["transaction_mode"] = "IMMEDIATE"
else:
    DATABASES["default"]["TEST"] = {"NAME": "test_" + DATABASES["default"]["NAME"]}

# CHANNELS
# ------------------------------------------------------------------------------
REDIS_URL = env("REDIS_URL", default="")
if REDIS_URL:
    CHANNEL_LAYERS = {"default": redis_channel_layer(REDIS_URL)}
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "portal.layers.ThreadSafeInMemoryChannelLayer"}}

# AUTH
# ------------------------------------------------------------------------------
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "catalog:preset-list"
LOGOUT_REDIRECT_URL = "login"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

# STATIC
# ------------------------------------------------------------------------------
STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]

# REST FRAMEWORK
# ------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "portal.auth.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 100,
    "EXCEPTION_HANDLER": "portal.api.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "KAITO Portal API",
    "DESCRIPTION": "Catalog of KAITO presets, workspace requests with approval, and model endpoints.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
}

# KAITO / CLUSTER
# ------------------------------------------------------------------------------
KAITO_VERSION = "v0.12.0"
# The cluster: AKS when all three AKS_* are set, else KUBECONFIG, else the in-cluster service account.
KUBECONFIG = env("KUBECONFIG", default="")
KUBE_CONTEXT = env("KUBE_CONTEXT", default="")
AKS_SUBSCRIPTION_ID = env("AKS_SUBSCRIPTION_ID", default="")
AKS_RESOURCE_GROUP = env("AKS_RESOURCE_GROUP", default="")
AKS_CLUSTER_NAME = env("AKS_CLUSTER_NAME", default="")
AZURE_ARM_ENDPOINT = env("AZURE_ARM_ENDPOINT", default="https://management.azure.com")
# Development override of the model endpoint, e.g. http://127.0.0.1:9000 or http://{name}.{namespace}.example
KAITO_INFERENCE_URL = env("KAITO_INFERENCE_URL", default="")
# Set by `make run` when the cluster is the local sandbox; pages say so.
SANDBOX = env.bool("PORTAL_SANDBOX", default=False)
# After an approval commits the web process applies at once ("background"), or "inline" (tests), or "off"
# (leave it to the reconciler's next resync).
APPLY_AFTER_APPROVAL = env("PORTAL_APPLY_AFTER_APPROVAL", default="background")
RECONCILE_RESYNC_SECONDS = env.int("RECONCILE_RESYNC_SECONDS", default=60)
LEASE_NAMESPACE = env("PORTAL_LEASE_NAMESPACE", default="default")
# The Azure region whose prices the cost estimate uses (catalog.Price rows per region).
PRICE_REGION = env("PORTAL_PRICE_REGION", default="eastus")
# Fernet key (urlsafe base64, 32 bytes) for secrets held until they are applied; derived from
# SECRET_KEY when unset, so rotating SECRET_KEY makes pending secrets unreadable (they must be re-entered).
ENCRYPTION_KEY = env("PORTAL_ENCRYPTION_KEY", default="")
MAX_INFERENCE_HOURS = env.int("PORTAL_MAX_INFERENCE_HOURS", default=720)
MAX_TUNING_HOURS = env.int("PORTAL_MAX_TUNING_HOURS", default=168)
BASE_URL = env("PORTAL_BASE_URL", default="http://127.0.0.1:8000")
# Hosts the dataset checks may reach although they are local; only tests set this, never production.
PREFLIGHT_ALLOW_HOSTS: list[str] = []
# After a tuning request is created its dataset and registry are checked: "background", "inline" or "off".
PREFLIGHT_AFTER_CREATE = env("PORTAL_PREFLIGHT_AFTER_CREATE", default="background")

# EMAIL
# ------------------------------------------------------------------------------
EMAIL_BACKEND = env("DJANGO_EMAIL_BACKEND", default="django.core.mail.backends.console.EmailBackend")
DEFAULT_FROM_EMAIL = env("DJANGO_DEFAULT_FROM_EMAIL", default="kaito-portal@localhost")

# LOGGING
# ------------------------------------------------------------------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("PORTAL_LOG_LEVEL", default="INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

# ==============================================================================
# RUNNING IN A CLUSTER (issue 8): production hardening, JSON logs, probes, metrics, OIDC sign-in.
# One appended block, so that the sections above keep their shape; deploy/README.md lists every variable.
# ==============================================================================
from django.core.exceptions import ImproperlyConfigured  # noqa: E402

# Request id and metrics wrap everything; ProbeMiddleware answers /healthz, /readyz and /metrics before host
# validation and the HTTPS redirect, because kubelet and Prometheus reach pods by IP over plain HTTP.
MIDDLEWARE = [
    "portal.logging.RequestIdMiddleware",
    "portal.metrics.MetricsMiddleware",
    "portal.health.ProbeMiddleware",
    *MIDDLEWARE,
]
# One name for the status choices that requests, events and filters share (drf-spectacular warns otherwise).
SPECTACULAR_SETTINGS["ENUM_NAME_OVERRIDES"] = {"StatusEnum": "workspaces.models.Status"}
# Dependencies whose failure makes /readyz answer 503 (all three are always checked and reported).
READYZ_REQUIRED = env.list("PORTAL_READYZ_REQUIRED", default=["database", "channels", "cluster"])
# When set, /metrics wants `Authorization: Bearer <token>`; otherwise restrict it with the NetworkPolicy.
METRICS_TOKEN = env("PORTAL_METRICS_TOKEN", default="")

LOG_FORMAT = env("PORTAL_LOG_FORMAT", default="json" if PRODUCTION else "plain")
if LOG_FORMAT == "json":
    LOGGING["formatters"]["json"] = {"()": "portal.logging.JsonFormatter"}
    LOGGING["handlers"]["console"]["formatter"] = "json"
    # Python warnings become log records too, so that every line on stderr is one JSON object.
    __import__("logging").captureWarnings(True)

if PRODUCTION:
    DEBUG = False
    if len(SECRET_KEY) < 50 or len(set(SECRET_KEY)) < 5 or SECRET_KEY.startswith(("django-insecure", "insecure-")):
        raise ImproperlyConfigured(
            "DJANGO_PRODUCTION=1 needs DJANGO_SECRET_KEY: at least 50 random characters, e.g. "
            "`python -c 'import secrets; print(secrets.token_urlsafe(64))'`."
        )
    if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
        raise ImproperlyConfigured("DJANGO_PRODUCTION=1 needs DATABASE_URL (PostgreSQL): web and reconciler share it.")
    if not REDIS_URL:
        raise ImproperlyConfigured(
            "DJANGO_PRODUCTION=1 needs REDIS_URL: the reconciler's status updates reach the browsers through it."
        )
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    # TLS ends at the ingress: trust its X-Forwarded-Proto (the ingress must overwrite a client's header).
    _proxy_header = env("DJANGO_SECURE_PROXY_SSL_HEADER", default="HTTP_X_FORWARDED_PROTO")
    SECURE_PROXY_SSL_HEADER = (_proxy_header, "https") if _proxy_header else None
    SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=True)
    SECURE_REDIRECT_EXEMPT = [r"^healthz/?$", r"^readyz/?$", r"^metrics/?$"]
    SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
    SECURE_HSTS_PRELOAD = env.bool("DJANGO_SECURE_HSTS_PRELOAD", default=False)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SESSION_COOKIE_HTTPONLY = True
    SECURE_CONTENT_TYPE_NOSNIFF = True
    SILENCED_SYSTEM_CHECKS = [
        # HSTS preload is a one-way entry in the browsers' list for the whole domain: opt in deliberately.
        *([] if SECURE_HSTS_PRELOAD else ["security.W021"]),
        # Switched off explicitly because the ingress redirects HTTP to HTTPS itself.
        *([] if SECURE_SSL_REDIRECT else ["security.W008"]),
    ]
    STORAGES = {
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
        # Hashed names + compressed copies made by collectstatic at image build; served by WhiteNoise.
        "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
    }

# OPENID CONNECT (Microsoft Entra ID or any provider), beside local accounts; off unless configured.
# ------------------------------------------------------------------------------
OIDC_RP_CLIENT_ID = env("OIDC_RP_CLIENT_ID", default="")
OIDC_RP_CLIENT_SECRET = env("OIDC_RP_CLIENT_SECRET", default="")
# The issuer, e.g. https://login.microsoftonline.com/<tenant id>/v2.0; endpoints come from its discovery
# document unless set one by one below.
OIDC_OP_ISSUER = env("OIDC_OP_ISSUER", default="")
OIDC_OP_AUTHORIZATION_ENDPOINT = env("OIDC_OP_AUTHORIZATION_ENDPOINT", default="")
OIDC_OP_TOKEN_ENDPOINT = env("OIDC_OP_TOKEN_ENDPOINT", default="")
OIDC_OP_USER_ENDPOINT = env("OIDC_OP_USER_ENDPOINT", default="")
OIDC_OP_JWKS_ENDPOINT = env("OIDC_OP_JWKS_ENDPOINT", default="")
OIDC_ENABLED = bool(OIDC_RP_CLIENT_ID and OIDC_RP_CLIENT_SECRET and OIDC_OP_ISSUER)
OIDC_RP_SIGN_ALGO = env("OIDC_RP_SIGN_ALGO", default="RS256")
OIDC_RP_SCOPES = env("OIDC_RP_SCOPES", default="openid email profile")
OIDC_USE_PKCE = env.bool("OIDC_USE_PKCE", default=True)
OIDC_TIMEOUT = env.int("OIDC_TIMEOUT", default=10)
OIDC_AUTHENTICATE_CLASS = "portal.oidc.AuthenticateView"
OIDC_CALLBACK_CLASS = "portal.oidc.CallbackView"
LOGIN_REDIRECT_URL_FAILURE = "/accounts/login/?sso=failed"
# The name on the sign-in button.
OIDC_PROVIDER_NAME = env("PORTAL_OIDC_PROVIDER_NAME", default="single sign-on")
# {"<group id or name>": {"team": "<team slug>", "role": "approver" | "requester"}}
OIDC_GROUP_MAP = env.json("PORTAL_OIDC_GROUP_MAP", default={})
# The claim holding the groups: "groups" (Entra ID, Keycloak) or "roles" (Entra ID app roles).
OIDC_GROUPS_CLAIM = env("PORTAL_OIDC_GROUPS_CLAIM", default="groups")
# A first sign-in whose username a local account already has is refused, unless this links the two.
OIDC_LINK_EXISTING_USERS = env.bool("PORTAL_OIDC_LINK_EXISTING_USERS", default=False)
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    *(["portal.oidc.OIDCBackend"] if OIDC_ENABLED else []),
]

# ==============================================================================
# CHAT (issue 6): the chat page, its WebSocket and the OpenAI-compatible endpoint.
# ==============================================================================
# Chat requests (messages sent on the page and API completions, counted together) per user and minute; 0: no limit.
CHAT_RATE_PER_MINUTE = env.int("PORTAL_CHAT_RATE_PER_MINUTE", default=30)
# Seconds to wait for a connection to the model, and then for each next piece of the answer.
CHAT_CONNECT_TIMEOUT = env.float("PORTAL_CHAT_CONNECT_TIMEOUT", default=5.0)
CHAT_READ_TIMEOUT = env.float("PORTAL_CHAT_READ_TIMEOUT", default=120.0)
# The rate limit counts in Django's cache, which is per process by default: several web replicas must share
# one, so REDIS_URL (production needs it for the channel layer anyway) backs the cache as well.
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "kaito-portal",
        }
    }
