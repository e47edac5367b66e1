"""docs/architecture.md's dependency picture is the one the imports draw today."""

from __future__ import annotations

from dependency_picture import BEGIN, END, ROOT, block, reduced


def test_the_page_shows_the_picture_the_imports_draw() -> None:
    page = (ROOT / "docs" / "architecture.md").read_text()
    start, end = page.index(BEGIN), page.index(END) + len(END)
    assert page[start:end] == block(), (
        "regenerate the block between the markers: python tests/dependency_picture.py"
    )


def test_an_arrow_that_a_path_implies_is_left_out() -> None:
    edges = {("a", "b"), ("b", "c"), ("a", "c"), ("c", "d")}
    assert reduced(edges) == {("a", "b"), ("b", "c"), ("c", "d")}
