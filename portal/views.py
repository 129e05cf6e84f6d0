"""Account pages: the profile, with the user's API tokens (created there and shown once, revoked there)."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from portal import services
from portal.models import ApiToken


class TokenForm(forms.Form):
    name = forms.CharField(
        max_length=100, label="Token name", help_text="What the token is for, e.g. 'notebook' or 'CI'."
    )


def _render(request: HttpRequest, form: TokenForm, *, raw: str = "", created: ApiToken | None = None) -> HttpResponse:
    context = {
        "tokens": ApiToken.objects.filter(user=request.user),
        "form": form,
        "raw_token": raw,
        "created": created,
        "teams": request.user.memberships.select_related("team"),
    }
    return render(request, "registration/profile.html", context)


@require_GET
def profile(request: HttpRequest) -> HttpResponse:
    return _render(request, TokenForm())


@never_cache  # the one response that holds the raw token must not be kept by any cache
@require_POST
def token_create(request: HttpRequest) -> HttpResponse:
    form = TokenForm(request.POST)
    if form.is_valid():
        try:
            token, raw = services.token_create(user=request.user, name=form.cleaned_data["name"])
        except ValidationError as exc:
            form.add_error("name", exc.message_dict.get("name", exc.messages))
        else:
            # Rendered here rather than after a redirect: a redirect would need the token in the session.
            return _render(request, TokenForm(), raw=raw, created=token)
    return _render(request, form)


@require_POST
def token_revoke(request: HttpRequest, token_id: int) -> HttpResponse:
    try:
        token = services.token_revoke(user=request.user, token_id=token_id)
    except ApiToken.DoesNotExist:
        raise Http404("No such token of yours.") from None
    messages.success(request, f"Revoked the token “{token.name}” ({token.prefix}…); it no longer works.")
    return redirect("profile")
