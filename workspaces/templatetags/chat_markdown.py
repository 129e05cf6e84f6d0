"""Template filter: a model's answer as sanitised Markdown HTML (workspaces.markdown)."""

from django import template
from django.utils.safestring import SafeString, mark_safe

from workspaces.markdown import render_markdown

register = template.Library()


@register.filter
def markdown_safe(text: str) -> SafeString:
    # Safe because render_markdown escapes raw HTML and sanitises the result by allow-list.
    return mark_safe(render_markdown(text or ""))
