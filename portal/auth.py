"""DRF authentication with the portal's API tokens: `Authorization: Bearer kp_…` (what OpenAI clients send)."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from portal.services import token_user


class ApiTokenAuthentication(authentication.BaseAuthentication):
    keywords = ("bearer", "token")

    def authenticate(self, request: Request) -> tuple[AbstractBaseUser, None] | None:
        header = authentication.get_authorization_header(request).decode(errors="replace").split()
        if not header or header[0].lower() not in self.keywords:
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("The Authorization header must be 'Bearer <token>'.")
        user = token_user(raw=header[1])
        if user is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked API token.")
        return user, None

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="kaito-portal"'
