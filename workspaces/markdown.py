"""Model output as safe HTML: Markdown with raw HTML off, then an allow-list sanitiser (the output is untrusted)."""

from __future__ import annotations

from collections.abc import Sequence

import nh3
from markdown_it import MarkdownIt
from markdown_it.common.utils import escapeHtml
from markdown_it.renderer import RendererHTML
from markdown_it.token import Token
from markdown_it.utils import EnvType, OptionsDict

ALLOWED_TAGS = {
    "p", "br", "hr", "strong", "em", "del", "s", "code", "pre", "blockquote", "ul", "ol", "li", "a",
    "h1", "h2", "h3", "h4", "h5", "h6", "table", "thead", "tbody", "tr", "th", "td",
}  # fmt: skip
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "ol": {"start"}}
SAFE_SCHEMES = {"http", "https", "mailto"}
LINK_REL = "noopener noreferrer nofollow"


def _image_as_link(
    renderer: RendererHTML, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType
) -> str:
    # An <img> would load from wherever the model says as soon as the answer is shown; a prompt injection
    # could exfiltrate the conversation in its URL. A link needs a deliberate click instead.
    token = tokens[idx]
    alt = renderer.renderInlineAsText(token.children or [], options, env) or "image"
    src = str(token.attrGet("src") or "")
    return f'<a href="{escapeHtml(src)}">{escapeHtml("image: " + alt)}</a>'


# "html": False escapes any raw HTML in the text; markdown-it already refuses javascript:/vbscript:/data:
# links, and nh3 below is the second, independent line: tags, attributes and URL schemes by allow-list.
_markdown = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
_markdown.enable(["table", "strikethrough"])
_markdown.add_render_rule("image", _image_as_link)


def _only_safe_urls(tag: str, attribute: str, value: str) -> str | None:
    if attribute == "href":
        scheme = value.split(":", 1)[0].strip().lower() if ":" in value else ""
        return value if scheme in SAFE_SCHEMES else None
    return value


_cleaner = nh3.Cleaner(
    tags=ALLOWED_TAGS,
    attributes=ALLOWED_ATTRIBUTES,
    attribute_filter=_only_safe_urls,
    url_schemes=SAFE_SCHEMES,
    url_relative="deny",  # a relative link would point into the portal itself, with the user's session
    link_rel=LINK_REL,
    strip_comments=True,
    clean_content_tags={"script", "style"},
)


def render_markdown(text: str) -> str:
    """Sanitised HTML for untrusted Markdown; safe to mark as safe in a template."""
    return _cleaner.clean(_markdown.render(text))
