"""The study tools in a notebook: Tape._repr_html_, mg.draw(t) without a path (a Drawing) and
mg.to_dot(t, values=True)."""

from __future__ import annotations

import html
import re
import shutil
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

import minigrad as mg
from minigrad import debug

TABLE_TAGS = {"table", "caption", "thead", "tbody", "tfoot", "tr", "th", "td", "br"}


class Cells(HTMLParser):
    """Collects the text of each <tr>'s cells, the caption and every tag seen."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.rows: list[list[str]] = []
        self.caption = ""
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self.rows[-1].append("")
            self._in = "cell"
        elif tag == "caption":
            self._in = "caption"
        elif tag == "br" and self._in == "cell":
            self.rows[-1][-1] += "\n"

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th", "caption"):
            self._in = None

    def handle_data(self, data: str) -> None:
        if self._in == "cell":
            self.rows[-1][-1] += data
        elif self._in == "caption":
            self.caption += data


def parse(markup: str) -> Cells:
    cells = Cells()
    cells.feed(markup)
    cells.close()
    return cells


def running_example(retain: bool = True) -> tuple[mg.Tensor, dict[str, mg.Tensor]]:
    x = mg.tensor([[0.5, -1.0, 2.0], [1.5, 0.0, -0.5]], requires_grad=True)
    b = mg.tensor([0.1, 0.2, 0.3], requires_grad=True)
    h = x * b
    z = (h + x).tanh()
    if retain:
        z.retain_grad()
    return z.sum(), {"x": x, "b": b, "h": h, "z": z}


# ---------------------------------------------------------------------------------------------
# Tape._repr_html_
# ---------------------------------------------------------------------------------------------
def test_tape_html_has_the_rows_of_the_text_listing_and_escapes_names() -> None:
    w = mg.tensor(np.ones((3, 2)), requires_grad=True)
    b = mg.tensor(np.zeros(2), requires_grad=True)
    x = mg.tensor(np.arange(12.0).reshape(4, 3))  # a constant: an input described as text
    loss = ((x @ w + b).tanh() * 0.5).sum()
    names = {'<script>alert("w")</script> & co': w, "b'": b}
    t = mg.tape(loss, names=names)
    markup = t._repr_html_()
    assert "<script>" not in markup and "</script>" not in markup
    parsed = parse(markup)
    assert set(parsed.tags) == TABLE_TAGS and parsed.tags.count("table") == 1

    text = str(t).splitlines()
    assert parsed.caption == text[0]
    header, *body, footer = parsed.rows
    assert footer == ["\n".join(text[-2:])]  # the two footer lines, one <br> apart
    # The text's rows: header, ops, a rule, leaves; its columns are padded with 2+ spaces.
    text_rows = [line for line in text[1:-2] if not set(line) <= {"-"}]
    assert len(text_rows) == 1 + len(t.rows) + len(t.leaves) == len(parsed.rows) - 1
    for cells, line in zip([header, *body], text_rows):
        assert [c for c in cells if c] == re.split(r"\s{2,}", line.strip()), line
    assert len({len(r) for r in [header, *body]}) == 1  # six cells in every row
    assert header[-1] == "saved" and body[0][-1].endswith(" B")  # bytes saved per node
    leaf_names = [cells[2] for cells in body[len(t.rows):]]
    assert leaf_names == list(names)  # unescaped back to the names given


def test_tape_html_saved_column_is_the_bytes_of_each_row() -> None:
    n = 1000  # large enough that the tape keeps tanh's output itself
    x = mg.tensor(np.linspace(-1.0, 1.0, n), requires_grad=True)
    loss = x.tanh().sum()
    t = mg.tape(loss)
    _, *body, _ = parse(t._repr_html_()).rows
    saved = {cells[1]: cells[5] for cells in body}
    assert saved["tanh"] == f"{8 * n:,} B (7.8 KiB)" and saved["sum"] == "0 B"
    assert saved["leaf"] == ""


def test_tape_html_of_a_tensor_that_records_nothing() -> None:
    t = mg.tape(mg.tensor([1.0, 2.0]))
    markup = t._repr_html_()
    assert markup.startswith("<pre>") and html.unescape(markup[5:-6]) == str(t)


# ---------------------------------------------------------------------------------------------
# draw() without a path
# ---------------------------------------------------------------------------------------------
FAKE_SVG = b'<svg xmlns="http://www.w3.org/2000/svg"><text>fake</text></svg>'


def test_draw_without_a_path_returns_a_drawing_of_the_dot_source() -> None:
    loss, names = running_example()
    d = mg.draw(loss, names={"x": names["x"]})
    assert isinstance(d, debug.Drawing)
    assert d.source == mg.to_dot(loss, {"x": names["x"]}) == repr(d)
    shown = mg.draw(loss, values=True)
    assert isinstance(shown, debug.Drawing) and shown.source == mg.to_dot(loss, values=True)


@pytest.mark.parametrize("missing", [ImportError("no graphviz"), RuntimeError("no dot")])
def test_drawing_without_graphviz_shows_the_dot_source(monkeypatch: pytest.MonkeyPatch,
                                                       missing: Exception) -> None:
    def pipe(source: str, fmt: str) -> bytes:
        raise missing

    monkeypatch.setattr(debug, "_pipe", pipe)
    loss, _ = running_example()
    d = mg.draw(loss)
    assert d._repr_svg_() is None  # Jupyter then falls back to the HTML
    markup = d._repr_html_()
    assert markup is not None
    pre = re.fullmatch(r"<p><small>([^<]*)</small></p><pre>([^<]*)</pre>", markup, re.S)
    assert pre is not None, markup
    assert "pip install -e &#x27;.[viz]&#x27;" in pre[1] and "apt-get install graphviz" in pre[1]
    assert html.unescape(pre[2]) == d.source and '"' not in pre[2]


def test_drawing_with_graphviz_shows_svg_only(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, str]] = []

    def pipe(source: str, fmt: str) -> bytes:
        calls.append((source, fmt))
        return FAKE_SVG

    monkeypatch.setattr(debug, "_pipe", pipe)
    loss, _ = running_example()
    d = mg.draw(loss)
    assert d._repr_svg_() == FAKE_SVG.decode()
    assert d._repr_html_() is None  # notebooks rank HTML above SVG: it would hide the picture
    assert d._repr_svg_() == FAKE_SVG.decode()
    assert calls == [(d.source, "svg")]  # rendered once, for every display of it


def test_drawing_without_the_graphviz_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "graphviz", None)  # makes `import graphviz` fail
    loss, _ = running_example()
    d = mg.draw(loss)
    assert d._repr_svg_() is None and "digraph tape {" in (d._repr_html_() or "")


def test_drawing_without_dot(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pytest.importorskip("graphviz")
    monkeypatch.setenv("PATH", str(tmp_path))  # no `dot` here
    loss, _ = running_example()
    assert mg.draw(loss)._repr_svg_() is None


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz `dot` not installed")
def test_drawing_renders_svg_with_graphviz() -> None:
    pytest.importorskip("graphviz")
    loss, names = running_example()
    loss.backward(retain_graph=True)
    svg = mg.draw(loss, names={"x": names["x"]}, values=True)._repr_svg_()
    assert svg is not None and "<svg" in svg and "tanh" in svg and "grad:" in svg


def test_draw_with_a_path_still_writes_the_file(monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    calls: list[tuple[str, str]] = []

    def pipe(source: str, fmt: str) -> bytes:
        calls.append((source, fmt))
        return FAKE_SVG

    monkeypatch.setattr(debug, "_pipe", pipe)
    loss, _ = running_example()
    path = mg.draw(loss, str(tmp_path / "g.PNG"), values=True)
    assert path == tmp_path / "g.PNG" and path.read_bytes() == FAKE_SVG
    assert calls == [(mg.to_dot(loss, values=True), "png")]


# ---------------------------------------------------------------------------------------------
# to_dot(values=True)
# ---------------------------------------------------------------------------------------------
def labels_of(src: str) -> dict[str, str]:
    """Tensor node -> its label, DOT escapes undone."""
    found = re.findall(r'^\s*(t\d+) \[shape=ellipse, [^\n]*?label="((?:[^"\\]|\\.)*)"', src, re.M)
    return {node: label.replace("\\n", "\n").replace('\\"', '"') for node, label in found}


def numbers_after(label: str, what: str) -> np.ndarray:
    """The numbers printed after `what:` (up to the next line naming something)."""
    part = label.split(f"\n{what}:", 1)[1].split("\ngrad:", 1)[0]
    return np.array([float(v) for v in re.findall(r"-?\d+\.?\d*(?:e[-+]?\d+)?", part)])


def node_of(src: str, k: int) -> str:
    return labels_of(src)[f"t{k}"]


def test_values_label_each_tensor_with_its_value_before_backward() -> None:
    loss, ts = running_example()
    src = mg.to_dot(loss, values=True)
    labels = labels_of(src)
    order = {"x": 0, "b": 1, "h": 2, "z": 4}  # the forward order of the running example
    for name, k in order.items():
        np.testing.assert_allclose(numbers_after(labels[f"t{k}"], "value"),
                                   ts[name].data.ravel(), atol=1e-4)
    np.testing.assert_allclose(numbers_after(labels["t5"], "value"), [loss.item()], atol=1e-4)
    assert not [label for label in labels.values() if "grad:" in label]  # none yet


def test_values_show_grads_of_leaves_and_retained_intermediates_only() -> None:
    loss, ts = running_example(retain=True)
    loss.backward(retain_graph=True)
    labels = labels_of(mg.to_dot(loss, values=True))
    for name, k in {"x": 0, "b": 1, "z": 4}.items():
        grad = ts[name].grad
        assert grad is not None
        np.testing.assert_allclose(numbers_after(labels[f"t{k}"], "grad"), grad.ravel(),
                                   atol=1e-4)
    assert [k for k, label in labels.items() if "grad:" in label] == ["t0", "t1", "t4"]

    loss, ts = running_example(retain=False)
    loss.backward(retain_graph=True)
    labels = labels_of(mg.to_dot(loss, values=True))
    assert [k for k, label in labels.items() if "grad:" in label] == ["t0", "t1"]


def test_values_summarise_a_large_array_by_min_and_max() -> None:
    rng = np.random.default_rng(0)
    w = mg.tensor(rng.normal(size=(30, 40)), requires_grad=True)
    scale = mg.tensor(np.arange(1.0, 41.0), requires_grad=True)  # 40 numbers, 1-D
    loss = (w * scale).square().sum()
    loss.backward(retain_graph=True)
    src = mg.to_dot(loss, values=True)
    for k, t in ((0, w), (1, scale)):
        label = node_of(src, k)
        assert "[" not in label and label.count("min ") == 2  # value and grad, both summarised
        assert t.grad is not None
        for what, a in (("value", t.data), ("grad", t.grad)):
            lo, hi = numbers_after(label, what)
            np.testing.assert_allclose([lo, hi], [a.min(), a.max()], rtol=1e-3)


def test_values_of_odd_shapes() -> None:
    cube = mg.tensor(np.ones((2, 2, 2)), requires_grad=True)  # 8 numbers but 3-D: summarised
    empty = mg.tensor(np.ones((2, 0, 3)), requires_grad=True)
    labels = labels_of(mg.to_dot(cube.sum() + empty.sum(), values=True))
    assert "value: min 1, max 1" in labels["t0"]
    assert "value: []" in labels["t2"]
    assert "value: [1., 2.]" in labels_of(mg.to_dot(mg.tensor([1.0, 2.0]), values=True))["t0"]


def test_default_output_is_the_values_output_without_its_value_lines() -> None:
    loss, ts = running_example()
    loss.backward(retain_graph=True)  # grads present must not change the default output
    plain = mg.to_dot(loss, names={"x": ts["x"]})
    assert plain == mg.to_dot(loss, {"x": ts["x"]}, values=False)
    assert "value:" not in plain and "grad:" not in plain
    with_values = mg.to_dot(loss, names={"x": ts["x"]}, values=True)
    assert with_values != plain
    assert re.sub(r'\\nvalue:[^"]*', "", with_values) == plain
