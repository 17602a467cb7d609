"""Every notebook carries what a learner relies on: the paper, objectives, a summary,
questions with answers, legible figures, and a size a code host still renders.

Figures are checked on the committed (learner-mode) outputs: every PNG or JPEG image
is at least `MIN_FIGURE_WIDTH` pixels wide, read from its own header.
"""

from __future__ import annotations

import base64
import struct

import nbformat
import pytest

from solo_lib.paths import REPO_ROOT

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
PAPER = "arxiv.org/abs/1912.04488"
MIN_FIGURE_WIDTH = 400
MAX_BYTES = 1_500_000


def image_width(mime: str, data: str) -> int:
    """The pixel width of a base64 PNG (IHDR) or JPEG (first SOFn marker)."""
    raw = base64.b64decode(data)
    if mime == "image/png":
        return struct.unpack(">I", raw[16:20])[0]
    position = 2
    while position < len(raw):
        marker, length = raw[position + 1], struct.unpack(">H", raw[position + 2 : position + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return struct.unpack(">H", raw[position + 7 : position + 9])[0]
        position += 2 + length
    raise ValueError("no JPEG frame header")


def test_image_width_reads_png_and_jpeg_headers():
    """Oracle: matplotlib writes a 4.5 x 2 inch figure at dpi 100 as 450 x 200 px."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure = plt.figure(figsize=(4.5, 2), dpi=100)
    for fmt, mime in (("png", "image/png"), ("jpeg", "image/jpeg")):
        buffer = io.BytesIO()
        figure.savefig(buffer, format=fmt, dpi=100)
        assert image_width(mime, base64.b64encode(buffer.getvalue()).decode()) == 450
    plt.close(figure)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_has_paper_objectives_summary_and_questions(path):
    cells = nbformat.read(path, as_version=4).cells
    first = cells[0].source
    assert PAPER in first, f"{path.name}: the first cell links the SOLO paper"
    assert "**Learning objectives.**" in first and "**Time.**" in first
    markdown = [c.source for c in cells if c.cell_type == "markdown"]
    assert any(s.startswith("## Summary") for s in markdown), f"{path.name}: no summary"
    questions = [i for i, s in enumerate(markdown) if s.startswith("## Check your understanding")]
    assert questions, f"{path.name}: no check-your-understanding questions"
    asked = markdown[questions[0]].count("\n1. ") + markdown[questions[0]].count("\n2. ")
    assert asked == 2, f"{path.name}: questions are a numbered list"
    assert "<details>" in markdown[questions[0] + 1], f"{path.name}: answers follow, folded"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_figures_are_legible_and_the_file_small(path):
    assert path.stat().st_size < MAX_BYTES, f"{path.name}: {path.stat().st_size} bytes"
    widths = [
        image_width(mime, output["data"][mime])
        for cell in nbformat.read(path, as_version=4).cells
        if cell.cell_type == "code"
        for output in cell.outputs
        for mime in ("image/png", "image/jpeg")
        if mime in output.get("data", {})
    ]
    narrow = [w for w in widths if w < MIN_FIGURE_WIDTH]
    assert not narrow, f"{path.name}: figures narrower than {MIN_FIGURE_WIDTH} px: {narrow}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_widget_views_have_their_state_saved(path):
    """A code host or nbviewer draws a widget from the notebook's saved widget state; a
    view whose model is not in it shows as ``VBox(children=...)`` text."""
    notebook = nbformat.read(path, as_version=4)
    state = (
        notebook.metadata.get("widgets", {})
        .get("application/vnd.jupyter.widget-state+json", {})
        .get("state", {})
    )
    views = [
        output["data"]["application/vnd.jupyter.widget-view+json"]["model_id"]
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if "application/vnd.jupyter.widget-view+json" in output.get("data", {})
    ]
    assert all(model_id in state for model_id in views), f"{path.name}: unsaved widget views"
