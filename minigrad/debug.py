"""Study tools: look at the tape that `backward()` will run.

    print(mg.tape(loss))            # one row per recorded op, in the order backward() runs them
    src = mg.to_dot(loss)           # Graphviz DOT text, no dependency
    mg.draw(loss, "graph.svg")      # rendered, with the optional `graphviz` package and `dot`
    mg.draw(loss)                   # in a notebook: the picture inline (or the DOT text)

In a notebook, a `Tape` shows as an HTML table, and `mg.draw(t)` as SVG; `values=True` labels the
graph's Tensors with their values and the gradients that backward() left in `.grad`.

This module only reads the tape: each op output's record (op, inputs, values, output, params;
see `Tensor`) and each primitive's `reads` (which arrays its VJP needs). The engine never
imports it.
The walk is the engine's own iterative topological sort (`transforms.toposort`), so the order shown
is exactly the order of `backward()` and a graph 100,000 ops deep is no problem.

How "saved for backward" is counted, per node: the arrays its VJP reads, that is its input
values when the primitive's `reads` has "x", its output when it has "y", and the arrays among its
parameters (a `where` condition, an integer index, a custom Function's `ctx.saved`). Each
distinct array (by identity) is counted once per node, at its `nbytes` (a view counts its own
size, not its base's); Python numbers are not arrays and count 0. An array read by two nodes
counts in both rows; the footer also gives the total over distinct arrays.
"""

from __future__ import annotations

import html
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple, overload

import numpy as np

from minigrad.function import FunctionCtx
from minigrad.tensor import Tensor
from minigrad.transforms import toposort


class TapeRow(NamedTuple):
    """One entry of the listing: a recorded op (the Tensor it made) or a leaf."""

    id: int  # the Tensor's position in forward order: %0, %1, ...
    op: str  # the primitive's name; "leaf" for a leaf that requires grad
    inputs: tuple[int | str, ...]  # ids of inputs on the tape; constants described as text
    shape: tuple[int, ...]
    dtype: str
    saved_bytes: int  # what this node keeps for its VJP (0 for leaves)
    saved_arrays: int  # how many distinct arrays that is
    name: str | None = None  # a leaf's name, from `names=`
    site: str | None = None  # the creating line, when recorded under detect_anomaly()


class Tape:
    """What `backward()` will run, readable. `str(tape)` is the table.

    `rows`: the recorded ops in the order backward() runs their VJPs (the output first).
    `leaves`: the leaves that require grad (parameters and inputs), which receive `.grad`.
    """

    def __init__(self, rows: list[TapeRow], leaves: list[TapeRow], distinct_saved_bytes: int,
                 root_requires_grad: bool = True) -> None:
        self.rows = rows
        self.leaves = leaves
        self.distinct_saved_bytes = distinct_saved_bytes
        self._root_requires_grad = root_requires_grad

    @property
    def ops(self) -> list[str]:
        """Op names in backward order."""
        return [r.op for r in self.rows]

    @property
    def total_saved_bytes(self) -> int:
        """The sum of the saved column (an array read by two nodes counts twice)."""
        return sum(r.saved_bytes for r in self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[TapeRow]:
        return iter(self.rows)

    def __repr__(self) -> str:
        return str(self)

    def _table(self) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
        """The header and the rows (ops, then leaves) that both renderings show."""
        header = ("id", "op", "inputs", "shape", "dtype", "saved")
        body: list[tuple[str, ...]] = [
            (f"%{r.id}", r.op, ", ".join(_ref(i) for i in r.inputs) or "-", _shape(r.shape),
             r.dtype, _bytes(r.saved_bytes)) for r in self.rows]
        body += [(f"%{r.id}", "leaf", r.name or "-", _shape(r.shape), r.dtype, "")
                 for r in self.leaves]
        return header, body

    def _title(self) -> str:
        n_ops, n_leaves = len(self.rows), len(self.leaves)
        leaves = f"{n_leaves} leaves that receive" if n_leaves != 1 else "1 leaf that receives"
        return (f"tape: {n_ops} op{'s' * (n_ops != 1)}, listed in the order backward() runs "
                f"their VJPs; then {leaves} .grad")

    def _footer(self) -> list[str]:
        n_ops = len(self.rows)
        return [f"saved for backward: {_bytes(self.total_saved_bytes)} over {n_ops} "
                f"op{'s' * (n_ops != 1)}; {_bytes(self.distinct_saved_bytes)} in distinct arrays",
                "(saved = the arrays an op's VJP reads, per its `reads`, plus array params; "
                "once per node)"]

    def __str__(self) -> str:
        if not self._root_requires_grad:
            return _EMPTY_TAPE
        header, body = self._table()
        widths = [max(len(row[c]) for row in [header, *body]) for c in range(len(header))]

        def line(cells: tuple[str, ...]) -> str:
            # numbers (the saved column) right-aligned, text left-aligned
            return "  ".join(c.rjust(w) if k == len(cells) - 1 else c.ljust(w)
                             for k, (c, w) in enumerate(zip(cells, widths))).rstrip()

        n_ops = len(self.rows)
        out = [self._title(), line(header)]
        out += [line(cells) for cells in body[:n_ops]]
        if self.leaves:
            out.append("-" * len(line(header)))
            out += [line(cells) for cells in body[n_ops:]]
        return "\n".join(out + self._footer())

    def _repr_html_(self) -> str:
        """The listing as an HTML table (what a notebook shows): the rows and columns of str()."""
        if not self._root_requires_grad:
            return f"<pre>{html.escape(_EMPTY_TAPE)}</pre>"
        header, body = self._table()
        right = ' style="text-align: right"'  # the saved column holds numbers

        def row(cells: tuple[str, ...], tag: str) -> str:
            return "<tr>" + "".join(
                f"<{tag}{right if k == len(cells) - 1 else ''}>{html.escape(c)}</{tag}>"
                for k, c in enumerate(cells)) + "</tr>"

        n_ops = len(self.rows)
        out = ['<table class="minigrad-tape">',
               f"<caption>{html.escape(self._title())}</caption>",
               f"<thead>{row(header, 'th')}</thead>",
               "<tbody>", *(row(cells, "td") for cells in body[:n_ops]), "</tbody>"]
        if self.leaves:
            out += ['<tbody style="border-top: 2px solid">',
                    *(row(cells, "td") for cells in body[n_ops:]), "</tbody>"]
        footer = "<br>".join(html.escape(text) for text in self._footer())
        out += [f'<tfoot><tr><td colspan="{len(header)}">{footer}</td></tr></tfoot>', "</table>"]
        return "\n".join(out)


_EMPTY_TAPE = "tape: empty (this Tensor does not require grad, so nothing was recorded)"


# ---------------------------------------------------------------------------------------------
# Reading the graph
# ---------------------------------------------------------------------------------------------
def _walk(root: Tensor, caller: str) -> list[Tensor]:
    """Tensors on root's tape, inputs before outputs: the engine's iterative toposort."""
    if not isinstance(root, Tensor):
        raise TypeError(f"{caller}: expected a Tensor, got {type(root).__name__}")
    if not root.requires_grad:
        return []
    try:
        return toposort(root, set())  # type: ignore[return-value]
    except RuntimeError as e:  # a node freed by an earlier backward()
        raise RuntimeError(f"{caller}: the tape behind this Tensor was freed by backward(); call "
                           f"{caller}() before backward(), or use "
                           f"backward(retain_graph=True)") from e


def _saved(node: Tensor) -> list[Any]:
    """The distinct arrays the VJP of the op that made node reads (see the module docstring)."""
    op = node._op
    assert op is not None  # only op outputs are listed
    # The inputs and output the rule reads, by its `reads`; every array parameter is shown.
    candidates = [v for i, v in enumerate(node._values) if op.reads_all or i in op.reads_inputs]
    if "y" in op.reads:
        candidates.append(node._ans)
    for p in node._params.values():
        if isinstance(p, FunctionCtx):
            candidates += p.saved
        elif isinstance(p, tuple):  # an index tuple may hold integer or boolean arrays
            candidates += p
        else:
            candidates.append(p)
    seen: dict[Any, Any] = {}
    for a in candidates:
        if isinstance(a, (np.ndarray, np.generic)):
            seen.setdefault(_memory(a), a)
    return list(seen.values())


def _memory(a: Any) -> Any:
    """What identifies the memory an array shows (the tape may keep a view of its own)."""
    a = np.asarray(a)
    return a.__array_interface__["data"][0], a.shape, a.strides, a.dtype.str


def _constant(value: Any) -> str:
    """How an input that is not on the tape (it does not require grad) is shown."""
    if isinstance(value, (int, float, bool, complex, np.generic)):
        return repr(value.item() if isinstance(value, np.generic) else value)
    return f"const{_shape(np.shape(value))}"


def _read(root: Tensor, names: Mapping[str, Tensor] | None, caller: str
          ) -> tuple[list[Tensor], dict[int, int], dict[int, str]]:
    order = _walk(root, caller)
    ids = {id(t): k for k, t in enumerate(order)}
    labels = {id(t): name for name, t in (names or {}).items()}
    return order, ids, labels


def tape(t: Tensor, names: Mapping[str, Tensor] | None = None) -> Tape:
    """The listing of what `t.backward()` will run: one row per recorded op, output first,
    then the leaves that require grad. `names` maps names to leaves (e.g.
    `dict(model.named_parameters())`) to label them."""
    order, ids, labels = _read(t, names, "tape")
    rows: list[TapeRow] = []
    leaves: list[TapeRow] = []
    distinct: dict[Any, int] = {}
    dtype_names: dict[np.dtype[Any], str] = {}  # str(dtype) is slow; a big tape has few dtypes
    for k in reversed(range(len(order))):  # backward() visits the order in reverse
        x = order[k]
        dtype = dtype_names.get(x.dtype) or dtype_names.setdefault(x.dtype, str(x.dtype))
        if x._op is None:
            leaves.append(TapeRow(k, "leaf", (), x.shape, dtype, 0, 0, name=labels.get(id(x))))
            continue
        saved = _saved(x)
        for a in saved:
            distinct[_memory(a)] = a.nbytes
        inputs = tuple(ids[id(p)] if p is not None else _constant(v)
                       for p, v in zip(x._inputs, x._values))
        rows.append(TapeRow(k, x._op.name, inputs, x.shape, dtype, sum(a.nbytes for a in saved),
                            len(saved), site=getattr(x, "_site", None)))
    leaves.sort(key=lambda r: r.id)
    return Tape(rows, leaves, sum(distinct.values()), root_requires_grad=t.requires_grad)


# ---------------------------------------------------------------------------------------------
# Graphviz
# ---------------------------------------------------------------------------------------------
def _quote(text: str) -> str:
    """A DOT string literal; newlines become DOT's centred line breaks."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def to_dot(t: Tensor, names: Mapping[str, Tensor] | None = None, *, values: bool = False) -> str:
    """Graphviz DOT source for t's tape, drawn in the forward direction (inputs at the top).

    Ops are boxes, labelled with the step at which backward() runs their VJP; Tensors are
    ellipses with their id, shape and dtype. Leaves that require grad are filled blue, constants
    (inputs that do not require grad) dashed grey, and the output has a double border.
    With `values=True` each Tensor's label also shows its value and, for leaves and for
    intermediates that asked with `retain_grad()`, its `.grad` once backward() has set it (call
    backward(retain_graph=True) to keep the tape to draw). Arrays of up to 12 numbers (at most
    2-D) are printed whole; a larger one is summarised by its minimum and maximum, beside the
    shape and dtype the label already shows.
    """
    order, ids, labels = _read(t, names, "to_dot")
    lines = ["digraph tape {",
             '  node [fontname="Helvetica", fontsize=11];',
             '  edge [color="#555555"];']
    if not order:
        label = f"{_shape(t.shape)} {t.dtype}\n(not on a tape)"
        if values:
            label += _value_lines(t)
        lines.append(f"  t0 [shape=ellipse, style=dashed, label={_quote(label)}];")
    constants: dict[int, str] = {}  # id(array) -> DOT name, so a shared constant is drawn once
    n_constants = 0
    steps_left = sum(x._op is not None for x in order)  # backward() runs the last op first
    for k, x in enumerate(order):
        name = labels.get(id(x))
        label = f"%{k}" + (f" {name}" if name else "") + f"\n{_shape(x.shape)} {x.dtype}"
        if values:
            label += _value_lines(x)
        if x._op is None:
            style = ', style=filled, fillcolor="#cfe2ff"'
        else:
            style = ", peripheries=2" if k == len(order) - 1 else ""
        lines.append(f"  t{k} [shape=ellipse, label={_quote(label)}{style}];")
        if x._op is None:
            continue
        op_label = f"{x._op.name}\nVJP #{steps_left}"
        steps_left -= 1
        lines.append(f"  op{k} [shape=box, style=rounded, label={_quote(op_label)}];")
        for p, v in zip(x._inputs, x._values):
            if p is not None:
                lines.append(f"  t{ids[id(p)]} -> op{k};")
                continue
            cname = constants.get(id(v)) if isinstance(v, np.ndarray) else None
            if cname is None:  # first use of this array, or a scalar: one ellipse per use
                cname = f"c{n_constants}"
                n_constants += 1
                if isinstance(v, np.ndarray):
                    constants[id(v)] = cname
                lines.append(f'  {cname} [shape=ellipse, style=dashed, color="#888888", '
                             f'fontcolor="#555555", label={_quote(_constant(v))}];')
            lines.append(f"  {cname} -> op{k} [style=dashed];")
        lines.append(f"  op{k} -> t{k};")
    return "\n".join(lines + ["}"]) + "\n"


def _value_lines(x: Tensor) -> str:
    """The label lines of `values=True`: the value, and the gradient backward() left in .grad
    (it fills only leaves' and retain_grad() intermediates')."""
    text = _array_text("value", x.data)
    if x.grad is not None:
        text += _array_text("grad", np.asarray(x.grad))
    return text


_PRINTED = 12  # arrays up to this many numbers (and at most 2-D) are printed whole


def _array_text(what: str, a: np.ndarray) -> str:
    if a.size == 0 or (a.size <= _PRINTED and a.ndim <= 2):
        text = np.array2string(a, precision=4, separator=", ")
        # a matrix starts on a line of its own, so its rows line up in the centred label
        return f"\n{what}:" + ("\n" if "\n" in text else " ") + text
    # a gradient has its Tensor's shape and dtype, which the label's second line gives
    lo, hi = (f"{v:.4g}" for v in (a.min(), a.max()))
    return f"\n{what}: min {lo}, max {hi}"


_INSTALL = ("install the graphviz Python package: run pip install -e '.[viz]' in your clone of "
            "minigrad (the `minigrad` on the package index is another project), and Graphviz's "
            "`dot` program (apt-get install graphviz, brew install graphviz or conda install "
            "graphviz); mg.to_dot(t) gives the DOT text without either")


def _pipe(source: str, fmt: str) -> bytes:
    """DOT source rendered by Graphviz in format `fmt`; ImportError or RuntimeError saying what
    to install if the graphviz package or the `dot` program is missing."""
    try:
        import graphviz
    except ImportError:
        raise ImportError(f"mg.draw needs the graphviz Python package: {_INSTALL}") from None
    try:
        data: bytes = graphviz.Source(source).pipe(format=fmt)
    except graphviz.ExecutableNotFound:
        raise RuntimeError(f"mg.draw: Graphviz's `dot` program was not found on PATH: "
                           f"{_INSTALL}") from None
    return data


class Drawing:
    """What `mg.draw(t)` returns without a path: the graph, shown inline by a notebook.

    A notebook shows the picture (SVG) when the graphviz package and Graphviz's `dot` are
    installed, and the DOT source otherwise; `repr()` is the DOT source, also in `.source`.
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self._svg: tuple[str | None] | None = None  # rendered once, on first display

    def _repr_svg_(self) -> str | None:
        """The SVG Graphviz makes; None without Graphviz, so a notebook shows the DOT source."""
        if self._svg is None:
            try:
                self._svg = (_pipe(self.source, "svg").decode("utf-8"),)
            except (ImportError, RuntimeError):
                self._svg = (None,)
        return self._svg[0]

    def _repr_html_(self) -> str | None:
        """The DOT source, when there is no SVG; None when there is (notebooks rank HTML above
        SVG, so answering both would hide the picture)."""
        if self._repr_svg_() is not None:
            return None
        note = ("The DOT source: Graphviz is not installed here. To see the picture, install "
                "the graphviz Python package (pip install -e '.[viz]' in your clone of minigrad) "
                "and Graphviz's `dot` program (apt-get install graphviz, brew install graphviz "
                "or conda install graphviz).")
        return f"<p><small>{html.escape(note)}</small></p><pre>{html.escape(self.source)}</pre>"

    def __repr__(self) -> str:
        return self.source


@overload
def draw(t: Tensor, path: None = None, names: Mapping[str, Tensor] | None = None, *,
         values: bool = False) -> Drawing: ...
@overload
def draw(t: Tensor, path: str | Path, names: Mapping[str, Tensor] | None = None, *,
         values: bool = False) -> Path: ...
def draw(t: Tensor, path: str | Path | None = None, names: Mapping[str, Tensor] | None = None,
         *, values: bool = False) -> Drawing | Path:
    """Render `to_dot(t, names, values=values)` to `path`, the format from the suffix (.svg,
    .png, .pdf), and return the path; without a path, return a `Drawing`, which a notebook
    shows inline.

    Writing a file needs the `graphviz` Python package and the `dot` program, and raises
    ImportError or RuntimeError saying what to install if either is missing; a `Drawing` shows
    the DOT source instead.
    """
    if path is None:
        return Drawing(to_dot(t, names, values=values))
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower() or "svg"
    path.write_bytes(_pipe(to_dot(t, names, values=values), fmt))
    return path


# ---------------------------------------------------------------------------------------------
# Formatting
# ---------------------------------------------------------------------------------------------
def _ref(i: int | str) -> str:
    return f"%{i}" if isinstance(i, int) else i


def _shape(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"


def _bytes(n: int) -> str:
    """Exact bytes, with a readable size beside them from 1 KiB on."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n:,} B ({n / size:.1f} {unit})"
    return f"{n:,} B"
