"""A real browser for the tests: Debian's headless chromium, and the DOM it rendered, as elements to look at.

``dump_dom(url)`` runs ``chromium --headless --dump-dom``: the browser loads the page, builds its
DOM (inline SVG included) and prints it serialised, which is what a person's browser would show.
``Dom`` parses that with the standard library's HTML parser into elements with their attributes
and their text, leaving out what a browser does not display (``<style>``, and the ``<title>`` of
an SVG element, shown only as a tooltip).

Chromium is a real dependency here: without it the tests fail, they do not skip (``make test``
installs it when missing).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from html.parser import HTMLParser

import pytest

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
HIDDEN = {"style", "script", "title", "head"}


def chromium() -> str:
    exe = shutil.which("chromium")
    if exe is None:
        pytest.fail("chromium not found: install it (Debian: apt-get install --no-install-recommends chromium); "
                    "`make test` does")
    return exe


def dump_dom(url: str, timeout_s: float = 120.0, budget_ms: int = 5000) -> str:
    """The DOM chromium built for ``url``, serialised (the page as a browser shows it, not its HTTP body)."""
    with tempfile.TemporaryDirectory(prefix="carehub-chromium-") as profile:
        result = subprocess.run(
            [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
             "--disable-extensions", "--disable-background-networking", f"--user-data-dir={profile}",
             f"--virtual-time-budget={budget_ms}", "--dump-dom", url],
            capture_output=True, text=True, timeout=timeout_s)
    assert result.returncode == 0, f"chromium exited {result.returncode}: {result.stderr[-2000:]}"
    assert "<html" in result.stdout, f"chromium printed no DOM for {url}: {result.stderr[-2000:]}"
    return result.stdout


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    parent: Element | None = None
    parts: list[str] = field(default_factory=list)  # the displayed text of it and everything in it

    def inside(self, outer: Element) -> bool:
        node = self.parent
        while node is not None:
            if node is outer:
                return True
            node = node.parent
        return False

    @property
    def text(self) -> str:
        return " ".join(" ".join(self.parts).split())

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())


class Dom(HTMLParser):
    """Every element of a page with its attributes and displayed text."""

    def __init__(self, page: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[Element] = []
        self._open: list[Element] = []
        self.feed(page)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, {k: v or "" for k, v in attrs}, self._open[-1] if self._open else None)
        self.elements.append(element)
        if tag not in VOID:
            self._open.append(element)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append(Element(tag, {k: v or "" for k, v in attrs}, self._open[-1] if self._open else None))

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self._open) - 1, -1, -1):
            if self._open[i].tag == tag:
                del self._open[i:]
                return

    def handle_data(self, data: str) -> None:
        if any(e.tag in HIDDEN for e in self._open):
            return
        for element in self._open:
            element.parts.append(data)

    def find(self, tag: str | None = None, cls: str | None = None, within: Element | None = None,
             **attrs: str) -> list[Element]:
        """Elements by tag, class, enclosing element and attributes (``data_unit="x"`` is ``data-unit="x"``)."""
        wanted = {k.replace("_", "-"): v for k, v in attrs.items()}
        return [e for e in self.elements if (tag is None or e.tag == tag) and (cls is None or cls in e.classes)
                and (within is None or e.inside(within)) and all(e.attrs.get(k) == v for k, v in wanted.items())]

    def one(self, tag: str | None = None, cls: str | None = None, within: Element | None = None,
            **attrs: str) -> Element:
        found = self.find(tag, cls, within, **attrs)
        assert len(found) == 1, f"{len(found)} elements <{tag} class={cls} {attrs}>"
        return found[0]

    @property
    def text(self) -> str:
        """The text a person sees on the page, whitespace folded."""
        body = [e for e in self.elements if e.tag == "body"]
        return body[0].text if body else ""

