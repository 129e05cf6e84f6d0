"""Checks a page must pass in any journey: it fits the screen, fields are labelled, focus shows; screenshots."""

from __future__ import annotations

import itertools
import re
import shutil
from pathlib import Path

from playwright.sync_api import Page, expect

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "build" / "e2e"
WIDTHS = ((1280, 800), (390, 844))  # a laptop and a phone

# Boxes as the reader sees them: every element's client rects (one per line for wrapped links), cut by each ancestor
# that clips its overflow. Elements inside a sideways-scrolling box (a .table-wrap, the sticky preview) only need
# that box to fit; the document itself must never scroll sideways. The skip link lives off-screen until focused.
_LAYOUT_JS = r"""
() => {
  const vw = window.innerWidth, problems = [];
  const docWidth = document.documentElement.scrollWidth;
  if (docWidth > vw) problems.push(`the document is ${docWidth}px wide in a ${vw}px viewport (horizontal scroll)`);
  const name = (el) => {
    let s = el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') + (el.name ? `[name=${el.name}]` : '');
    const text = (el.innerText || el.value || el.getAttribute('aria-label') || '').trim().replace(/\s+/g, ' ');
    return text ? `${s} "${text.slice(0, 40)}"` : s;
  };
  // checkVisibility: also false inside a closed <details>, whose content Chromium skips rather than hides.
  const shown = (el) => !el.closest('.skip-link') && el.type !== 'hidden'
    && el.checkVisibility({visibilityProperty: true}) && el.getClientRects().length > 0;
  const cut = (r, c) => ({left: Math.max(r.left, c.left), right: Math.min(r.right, c.right),
                          top: Math.max(r.top, c.top), bottom: Math.min(r.bottom, c.bottom)});
  const area = (r) => r.right - r.left > 1 && r.bottom - r.top > 1;
  const items = [];
  const selector = 'a[href], button, input, select, textarea, summary, [tabindex]:not([tabindex="-1"])';
  for (const el of document.querySelectorAll(selector)) {
    if (!shown(el)) continue;
    let rects = [...el.getClientRects()].map(r => ({left: r.left, right: r.right, top: r.top, bottom: r.bottom}));
    let scroller = null;
    for (let a = el.parentElement; a && a !== document.body && a !== document.documentElement; a = a.parentElement) {
      const style = getComputedStyle(a);
      if (style.overflowX !== 'visible' || style.overflowY !== 'visible') {
        const box = a.getBoundingClientRect();
        rects = rects.map(r => cut(r, box));
        if (!scroller && (style.overflowX === 'auto' || style.overflowX === 'scroll')) scroller = a;
      }
    }
    rects = rects.filter(area);
    if (!rects.length) continue;  // scrolled out of its box: not on screen, nothing to overlap
    const outer = scroller ? [scroller.getBoundingClientRect()] : rects;
    for (const r of outer) {
      if (r.left < -0.5 || r.right > vw + 0.5) {
        const where = scroller ? ` (its scrolling box ${name(scroller)})` : '';
        problems.push(`${name(el)} is cut off: ${Math.round(r.left)}..${Math.round(r.right)}px of ${vw}px${where}`);
        break;
      }
    }
    items.push({el, rects});
  }
  for (let i = 0; i < items.length; i++) {
    for (let j = i + 1; j < items.length; j++) {
      const a = items[i], b = items[j];
      if (a.el.contains(b.el) || b.el.contains(a.el)) continue;
      const hit = a.rects.some(ra => b.rects.some(rb => area(cut(ra, rb))));
      if (hit) problems.push(`${name(a.el)} overlaps ${name(b.el)}`);
    }
  }
  return problems;
}
"""

_UNLABELLED_JS = r"""
() => [...document.querySelectorAll('input, select, textarea')].filter(el => {
  if (['hidden', 'submit', 'button', 'reset', 'image'].includes(el.type)) return false;
  if (!el.checkVisibility({visibilityProperty: true}) || !el.getClientRects().length) return false;
  if ((el.getAttribute('aria-label') || '').trim()) return false;
  const ids = (el.getAttribute('aria-labelledby') || '').split(/\s+/).filter(Boolean);
  if (ids.length && ids.every(id => (document.getElementById(id)?.textContent || '').trim())) return false;
  return ![...(el.labels || [])].some(label => label.textContent.trim());
}).map(el => el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') + (el.name ? `[name=${el.name}]` : ''))
"""

_FOCUS_JS = r"""
() => {
  const el = document.activeElement;
  if (!el || el === document.body) return {element: 'body', shown: false};
  const style = getComputedStyle(el);
  const outline = style.outlineStyle !== 'none' && parseFloat(style.outlineWidth) > 0;
  const shadow = !!style.boxShadow && style.boxShadow !== 'none';
  const element = el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') + (el.name ? `[name=${el.name}]` : '');
  return {element, id: el.id, outline, shadow, shown: el.matches(':focus-visible') && (outline || shadow)};
}
"""


class Shots:
    """Numbered screenshots of one test: build/e2e/<test>/<nn>-<step>.png (the folder is emptied first)."""

    def __init__(self, test_name: str) -> None:
        self.folder = SHOTS / re.sub(r"[^A-Za-z0-9_.-]+", "-", test_name).strip("-")
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)
        self._numbers = itertools.count(1)

    def __call__(self, page: Page, step: str) -> Path:
        path = self.folder / f"{next(self._numbers):02d}-{re.sub(r'[^a-z0-9]+', '-', step.lower()).strip('-')}.png"
        page.screenshot(path=str(path), full_page=True)
        return path


def layout_problems(page: Page) -> list[str]:
    return page.evaluate(_LAYOUT_JS)


def check_fits(page: Page, shots: Shots, step: str) -> None:
    """At 1280 px and at 390 px: no sideways scroll, nothing cut off, no two controls on top of each other."""
    original = page.viewport_size
    found = {}
    try:
        for width, height in WIDTHS:
            page.set_viewport_size({"width": width, "height": height})
            page.wait_for_timeout(150)  # a layout pass after the resize (media queries, sticky boxes)
            shots(page, f"{step}-{width}px")
            problems = layout_problems(page)
            if problems:
                found[width] = problems
    finally:
        page.set_viewport_size(original)
    assert not found, f"{step} does not fit the screen: {found}"


def unlabelled_fields(page: Page) -> list[str]:
    return page.evaluate(_UNLABELLED_JS)


def focused(page: Page) -> dict:
    return page.evaluate(_FOCUS_JS)


def tab_to(page: Page, element_id: str, *, limit: int = 80) -> list[dict]:
    """Press Tab until the element with this id has focus; every stop on the way must show its focus."""
    stops = []
    for _ in range(limit):
        page.keyboard.press("Tab")
        state = focused(page)
        stops.append(state)
        assert state["shown"], f"focus is not visible on {state['element']} (stops so far: {stops})"
        if state.get("id") == element_id:
            return stops
    raise AssertionError(f"#{element_id} never got the focus in {limit} tabs: {[s['element'] for s in stops]}")


def watch_page(page: Page) -> None:
    """Mark the page and record every status badge it shows, to prove later that it changed without a reload."""
    page.evaluate(
        """() => {
        window.__e2eStay = 'same page';
        window.__statusSeen = [];
        const record = () => {
          const badge = document.querySelector('#request-status .badge');
          const text = badge && badge.textContent.trim();
          if (text && window.__statusSeen[window.__statusSeen.length - 1] !== text) window.__statusSeen.push(text);
        };
        record();
        new MutationObserver(record).observe(document.body, {subtree: true, childList: true, characterData: true});
    }"""
    )


def statuses_seen(page: Page) -> list[str]:
    """The badges recorded since watch_page; fails if the page was reloaded or left meanwhile."""
    assert page.evaluate("() => window.__e2eStay") == "same page", "the page was reloaded or left"
    return page.evaluate("() => window.__statusSeen")


def wait_live(page: Page) -> None:
    """The page's WebSocket is open (portal.js marks <body data-ws="open">), so no update can slip past it."""
    expect(page.locator("body[data-ws=open]")).to_have_count(1)


def in_order(seen: list[str], expected: list[str]) -> bool:
    """True when `expected` appears in `seen` in this order (other statuses may come between)."""
    rest = iter(seen)
    return all(any(s == e for s in rest) for e in expected)
