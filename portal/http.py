"""Request typing and the page-or-fragment rule shared by every htmx view."""

from django.http import HttpRequest
from django_htmx.middleware import HtmxDetails


class HtmxHttpRequest(HttpRequest):
    # django-stubs pattern from django-htmx's example project: the middleware adds `htmx`.
    htmx: HtmxDetails


def wants_fragment(request: HtmxHttpRequest) -> bool:
    """htmx asked for a part of the page (a boosted request still wants the whole page)."""
    return bool(request.htmx) and not request.htmx.boosted
