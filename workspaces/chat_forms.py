"""The chat and compare forms: rendered on the pages, validating what the WebSocket receives from them."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django import forms

from workspaces.services.conversations import ChatSettings

PROMPT_MAX_CHARS = 32_000
MAX_TOKENS_LIMIT = 32_768


class ChatSettingsForm(forms.Form):
    model = forms.CharField(max_length=200, widget=forms.Select, help_text="The base model or one of its adapters.")
    system_prompt = forms.CharField(
        required=False, max_length=8000, widget=forms.Textarea(attrs={"rows": 2}), label="System prompt"
    )
    temperature = forms.FloatField(min_value=0, max_value=2, initial=0.7, widget=forms.NumberInput({"step": "any"}))
    top_p = forms.FloatField(
        min_value=0.01, max_value=1, initial=1.0, label="Top-p", widget=forms.NumberInput({"step": "any"})
    )
    max_tokens = forms.IntegerField(min_value=1, max_value=MAX_TOKENS_LIMIT, initial=512, label="Max tokens")
    prompt = forms.CharField(
        max_length=PROMPT_MAX_CHARS,
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "Ask the model…", "id": "prompt"}),
        label="Message",
    )

    def __init__(self, *args: Any, models: Iterable[str] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.set_models(models)

    def set_models(self, models: Iterable[str]) -> None:
        choices = [(m, m) for m in dict.fromkeys(models)]
        self.fields["model"].widget.choices = choices
        if choices and not self.initial.get("model"):
            self.initial["model"] = choices[0][0]

    def settings(self) -> ChatSettings:
        data = self.cleaned_data
        return ChatSettings(
            model=data["model"],
            system_prompt=data.get("system_prompt") or "",
            temperature=data["temperature"],
            top_p=data["top_p"],
            max_tokens=data["max_tokens"],
        )

    def error_text(self) -> str:
        labels = {name: self[name].label for name in self.fields}
        return " ".join(f"{labels.get(name, 'Form')}: {' '.join(errs)}" for name, errs in self.errors.items())


class ChatForm(ChatSettingsForm):
    conversation = forms.IntegerField(required=False, widget=forms.HiddenInput(attrs={"id": "conversation-id"}))


class CompareForm(ChatSettingsForm):
    """Two models answer the same prompt: `model` is the left one, `model_b` the right one."""

    model_b = forms.CharField(max_length=200, widget=forms.Select, label="Model B")

    def set_models_b(self, models: Iterable[str]) -> None:
        choices = [(m, m) for m in dict.fromkeys(models)]
        self.fields["model_b"].widget.choices = choices
        if choices and not self.initial.get("model_b"):
            # Base versus tuned: preselect a different model than the left side when there is one.
            self.initial["model_b"] = choices[-1][0]


def settings_initial(settings: ChatSettings | None) -> dict[str, Any]:
    if settings is None:
        return {}
    return {
        "model": settings.model,
        "system_prompt": settings.system_prompt,
        "temperature": settings.temperature,
        "top_p": settings.top_p,
        "max_tokens": settings.max_tokens,
    }
