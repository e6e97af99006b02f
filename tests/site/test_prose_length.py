"""The posts' prose, read from the built HTML without a browser: posts 3 and 5 keep their body
to at most 4,000 words, every post ends in a "Measurement notes" appendix that its body links
to, the kernel-choice note is said once per page, and no sentence ends in "..".

Body prose is the text a reader reads as sentences: headings, paragraphs, lists, and the inline
code inside them (it is read within its sentence). Left out are code blocks (pre), tables with
their captions, notes and footers, math (KaTeX/arithmatex markup, MathJax scripts, and $...$ /
$$...$$ source that is typeset in the browser), charts with their captions (notes, provenance),
figure captions, scripts and styles, and the appendix: its heading and everything after it. A
word is a whitespace-separated token with a letter or digit in it.
"""

from __future__ import annotations

import re

import pytest
from bs4 import BeautifulSoup

from site_helpers import PAGES, SITE

POSTS = [name for name in PAGES if PAGES[name].startswith("posts/")]
WORD_LIMIT = {"flash": 4000, "gluon": 4000}
APPENDIX = "measurement-notes"
DISPATCH = "chose its kernel"  # blog.query.dispatch_note's words
SAYS_DISPATCH = {"flash", "optimizing", "gluon"}  # the pages that draw production data: they say it, once

NOT_PROSE = ", ".join([
    "script", "style", "noscript", "pre", "table", ".table-scroll", ".bench-prov", ".bench-notes",
    ".bench-details", ".katex", ".katex-display", ".arithmatex", "mjx-container", ".MathJax", ".chart",
    ".plotly-chart", ".plotly-graph-div", ".chart-notes", ".chart-provenance", "figure", "figcaption",
    ".headerlink", ".anchor-link",
])
MATH_SOURCE = re.compile(r"\$\$.+?\$\$|\$[^$\n]+?\$|\\\[.+?\\\]|\\\(.+?\\\)", re.S)


def article(name: str) -> BeautifulSoup:
    path = SITE / PAGES[name] / "index.html"
    if not path.exists():
        pytest.fail(f"no built page at {path}: run `mkdocs build --strict` first (or point SITE_DIR at a build)")
    soup = BeautifulSoup(path.read_text(encoding="utf-8"), "html.parser")
    body = soup.select_one("article.md-content__inner") or soup.body
    assert body is not None, f"{path} has no article"
    return body


def body_and_appendix(body: BeautifulSoup):
    """The article split at the appendix heading: (body, appendix), both fresh trees. The
    appendix is None when the page has no heading with id ``measurement-notes``."""
    html = str(body)
    heading = body.find(id=APPENDIX)
    if heading is None:
        return BeautifulSoup(html, "html.parser"), None
    marker = "\x00APPENDIX\x00"
    heading.insert_before(marker)
    # Everything after the marker in document order is appendix; cut the serialised tree there.
    text = str(body)
    heading.find_previous(string=marker).extract()
    cut = text.index(marker)
    return BeautifulSoup(text[:cut], "html.parser"), BeautifulSoup(text[cut + len(marker):], "html.parser")


def prose_words(tree: BeautifulSoup) -> list[str]:
    """The words of the visible body prose in ``tree`` (see the module docstring)."""
    tree = BeautifulSoup(str(tree), "html.parser")
    for el in tree.select(NOT_PROSE):
        el.decompose()
    for el in tree.select('script[type^="math"]'):
        el.decompose()
    text = MATH_SOURCE.sub(" ", tree.get_text(" "))
    return [w for w in text.split() if re.search(r"[^\W_]", w)]


@pytest.mark.parametrize("name", list(WORD_LIMIT))
def test_long_posts_keep_their_body_short(name):
    body, _ = body_and_appendix(article(name))
    words = prose_words(body)
    print(f"{name}: {len(words)} words of body prose")
    assert len(words) <= WORD_LIMIT[name], (
        f"{PAGES[name]}: {len(words)} words of body prose, over {WORD_LIMIT[name]}; "
        f"it starts {' '.join(words[:12])!r}")


@pytest.mark.parametrize("name", POSTS)
def test_every_post_has_measurement_notes_the_body_links_to(name):
    body, appendix = body_and_appendix(article(name))
    assert appendix is not None, f"{PAGES[name]}: no heading with id {APPENDIX!r}"
    heading = article(name).find(id=APPENDIX)
    assert heading.name == "h2" and "Measurement notes" in heading.get_text(), heading
    later = [h.get_text(" ", strip=True) for h in heading.find_all_next("h2")]
    assert not later, f"{PAGES[name]}: the Measurement notes must be the last section, but {later} follow"
    assert prose_words(appendix), f"{PAGES[name]}: the Measurement notes are empty"
    links = body.select(f'a[href="#{APPENDIX}"]')
    assert links, f"{PAGES[name]}: nothing in the body links to #{APPENDIX}"


@pytest.mark.parametrize("name", POSTS)
def test_the_kernel_choice_note_is_said_once(name):
    html = (SITE / PAGES[name] / "index.html").read_text(encoding="utf-8")
    # Raw HTML, so a copy inside a chart's JSON (its notes) counts too.
    count = html.count(DISPATCH)
    if name in SAYS_DISPATCH:
        assert count == 1, f"{PAGES[name]}: {DISPATCH!r} appears {count} times, not once"
        _, appendix = body_and_appendix(article(name))
        assert appendix is not None and DISPATCH in appendix.get_text(" "), (
            f"{PAGES[name]}: the kernel-choice note is not in the Measurement notes")
    else:
        assert count <= 1, f"{PAGES[name]}: {DISPATCH!r} appears {count} times"


def test_dispatch_note_says_a_shared_rule_once():
    from blog import query

    def doc(gpu, commit, rule):
        return {"provenance": {"gpu": gpu, "git_commit": commit, "flash_dispatch": rule}}

    rule = "forward: the pointer kernel (kernels/flash.py)."
    two = query.dispatch_note([doc("NVIDIA H100 80GB HBM3", "abc1234ff", rule), doc("NVIDIA H200", "def5678ff", rule)])
    assert two.count(DISPATCH) == 1 and "H100 (commit abc1234)" in two and "H200 (commit def5678)" in two
    assert ".." not in two and two.endswith("kernels/flash.py).")
    other = query.dispatch_note([doc("NVIDIA H100", "abc1234", rule), doc("NVIDIA H200", "def5678", "backward: x")])
    assert other.count(DISPATCH) == 2, "two different rules are two sentences"
    assert query.dispatch_note(doc("NVIDIA H100", "abc1234", rule)) == (
        f"flash_attention on the H100 (commit abc1234) {DISPATCH}: {rule}")
    assert query.dispatch_note([doc("NVIDIA H100", "abc1234", None)]) is None


@pytest.mark.parametrize("name", POSTS)
def test_no_double_full_stop(name):
    text = BeautifulSoup(str(article(name)), "html.parser")
    for el in text.select("script, style, pre, code"):
        el.decompose()
    # ".." between words: a sentence ended twice ("kernel.. Measured"); "..." is an ellipsis.
    found = re.findall(r"\S{0,20}(?<!\.)\.\.(?!\.)\s*\S{0,20}", text.get_text(" "))
    assert not found, f"{PAGES[name]}: {found}"
