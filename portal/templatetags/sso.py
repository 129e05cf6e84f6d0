"""`{% sso_button next %}`: the single sign-on button on the login page, shown only when OIDC is configured."""

from __future__ import annotations

from urllib.parse import urlencode

from django import template
from django.conf import settings
from django.urls import reverse
from django.utils.html import format_html

register = template.Library()


@register.simple_tag(takes_context=True)
def sso_button(context: template.Context, next_url: str = "") -> str:
    request = context.get("request")
    failed = request is not None and request.GET.get("sso") == "failed"
    message = "Single sign-on did not complete. Try again, or use a local account."
    notice = format_html('<div class="form-errors" role="alert">{}</div>', message) if failed else ""
    if not settings.OIDC_ENABLED:
        return notice
    url = reverse("oidc_authentication_init") + (f"?{urlencode({'next': next_url})}" if next_url else "")
    return format_html(
        '{}<p class="sso"><a class="button" href="{}" id="sso-sign-in">Sign in with {}</a></p>',
        notice,
        url,
        settings.OIDC_PROVIDER_NAME,
    )
