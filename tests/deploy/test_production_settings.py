"""DJANGO_PRODUCTION=1: `manage.py check --deploy` is clean, and unsafe settings refuse to start."""

import secrets

import pytest

from tests.portal.servers import clean_env, manage

STRONG_KEY = secrets.token_urlsafe(64)


def production_env(**changes):
    values = {
        "DJANGO_PRODUCTION": "1",
        "DJANGO_SECRET_KEY": STRONG_KEY,
        "DJANGO_ALLOWED_HOSTS": "portal.example.com",
        "DJANGO_CSRF_TRUSTED_ORIGINS": "https://portal.example.com",
        "DATABASE_URL": "postgres://portal:pw@127.0.0.1:5432/portal",  # check --deploy does not connect
        "REDIS_URL": "redis://127.0.0.1:6379/0",
    }
    values.update(changes)
    return clean_env(**{k: v for k, v in values.items() if v is not None})


def check_deploy(env):
    return manage("check", "--deploy", "--fail-level", "WARNING", env=env)


def test_check_deploy_has_no_warnings_in_production():
    result = check_deploy(production_env())
    assert result.returncode == 0, result.stderr + result.stdout
    assert "System check identified no issues (1 silenced)." in result.stdout  # W021: HSTS preload is opt-in


def test_check_deploy_with_preload_and_an_ingress_that_redirects():
    result = check_deploy(production_env(DJANGO_SECURE_HSTS_PRELOAD="1", DJANGO_SECURE_SSL_REDIRECT="0"))
    assert result.returncode == 0, result.stderr + result.stdout
    assert "(1 silenced)" in result.stdout  # W008: the ingress redirects


def test_the_development_defaults_do_warn():
    """The same check without DJANGO_PRODUCTION finds problems: the test above can fail."""
    result = check_deploy(clean_env())
    assert result.returncode != 0
    for warning in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert warning in result.stderr, warning


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"DJANGO_SECRET_KEY": None}, "needs DJANGO_SECRET_KEY"),
        ({"DJANGO_SECRET_KEY": "short-key"}, "needs DJANGO_SECRET_KEY"),
        ({"DJANGO_SECRET_KEY": "django-insecure-" + "a1b2c3d4" * 8}, "needs DJANGO_SECRET_KEY"),
        ({"DATABASE_URL": None}, "needs DATABASE_URL"),
        ({"REDIS_URL": None}, "needs REDIS_URL"),
    ],
)
def test_production_refuses_to_start_without_its_settings(changes, message):
    result = manage("check", env=production_env(**changes))
    assert result.returncode != 0 and message in result.stderr


def test_hsts_and_secure_cookies_are_on():
    code = (
        "from django.conf import settings as s; "
        "print(s.SECURE_HSTS_SECONDS, s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SECURE_PROXY_SSL_HEADER, "
        "s.DEBUG, s.CSRF_TRUSTED_ORIGINS, s.LOG_FORMAT)"
    )
    result = manage("shell", "-c", code, env=production_env(DJANGO_DEBUG="1"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == (
        "31536000 True True ('HTTP_X_FORWARDED_PROTO', 'https') False ['https://portal.example.com'] json"
    )
