"""Template context shared by every page."""

from django.conf import settings
from django.http import HttpRequest


def portal(request: HttpRequest) -> dict[str, object]:
    return {"KAITO_VERSION": settings.KAITO_VERSION, "SANDBOX": settings.SANDBOX}
