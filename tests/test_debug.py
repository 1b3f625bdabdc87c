"""Study tools: mg.tape, mg.to_dot, mg.draw (debug.py) and mg.detect_anomaly (modes.py)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import minigrad as mg
from minigrad import readonly

HERE = Path(__file__).resolve()


def line_of(marker: str) -> int:
    """The line number in this file of the one line carrying `marker` in a comment."""
    hits = [n for n, text in enumerate(HERE.read_text().splitlines(), 1)
            if text.rstrip().endswith(f"# {marker}")]
    assert len(hits) == 1, marker
    return hits[0]


def make_logging_op(name: str, log: list[str]) -> type[mg.Function]:
    """A custom identity op that notes when its backward runs: shows the real VJP order."""

    def forward(ctx: mg.FunctionCtx, x: np.ndarray) -> np.ndarray:
        return x.copy()

    def backward(ctx: mg.FunctionCtx, g: np.ndarray) -> np.ndarray:
        log.append(name)
        return g

    return type(name, (mg.Function,), {"forward": staticmethod(forward),
                                       "backward": staticmethod(backward)})


# ---------------------------------------------------------------------------------------------
# tape
# ---------------------------------------------------------------------------------------------
def test_tape_rows_ids_and_saved_bytes() -> None:
    # n elements: large enough that the tape keeps exp's output itself for multiply (it copies
    # small arrays, which would then be counted as arrays of their own)
    n = getattr(readonly, "_COPY_UP_TO", 0) // 8 + 3
    b = 8 * n
    x = mg.tensor(np.linspace(0.0, 1.0, n), requires_grad=True)
    y = x.exp()  # exp's VJP reads its output: b bytes
    z = y * y  # multiply reads its inputs: the same array twice, counted once: b bytes
    s = z.sum()  # sum reads nothing
    t = mg.tape(s, names={"x": x})
    assert t.ops == ["sum", "multiply", "exp"]
    assert [r.id for r in t.rows] == [3, 2, 1]
    assert [r.inputs for r in t.rows] == [(2,), (1, 1), (0,)]
    assert [r.saved_bytes for r in t.rows] == [0, b, b]
    assert [r.saved_arrays for r in t.rows] == [0, 1, 1]
    assert t.total_saved_bytes == 2 * b
    assert t.distinct_saved_bytes == b  # exp's output is multiply's input: one array
    assert len(t) == 3
    (leaf,) = t.leaves
    assert (leaf.id, leaf.op, leaf.name, leaf.shape, leaf.dtype) == (0, "leaf", "x", (n,),
                                                                     "float64")
    text = str(t)
    lines = text.splitlines()
    assert lines[0].startswith("tape: 3 ops")
    assert re.search(rf"%2\s+multiply\s+%1, %1\s+\({n},\)\s+float64\s+{b:,} B", text), text
    assert re.search(rf"%0\s+leaf\s+x\s+\({n},\)\s+float64", text)
    assert f"saved for backward: {2 * b:,} B" in text
    assert re.search(rf"; {b:,} B( \([^)]*\))? in distinct arrays", text), text
    assert repr(t) == text


def test_tape_counts_what_the_tape_holds_for_small_arrays() -> None:
    """A small input a VJP reads may be the tape's own copy: the listing counts the arrays the
    tape holds, whichever they are."""
    x = mg.tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = x.exp()
    (row,) = [r for r in mg.tape((y * y).sum()).rows if r.op == "multiply"]
    assert row.saved_arrays in (1, 2) and row.saved_bytes == 24 * row.saved_arrays


def test_tape_counts_array_params_and_shows_constants() -> None:
    x = mg.tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    cond = np.array([True, False, True])  # 3 B, read by where's VJP
    idx = np.array([0, 0, 1])  # 24 B, read by getitem's VJP (scatter-add)
    w = mg.where(cond, x, 0.5)
    out = (w[idx] * 2.0).sum()
    t = mg.tape(out)
    assert t.ops == ["sum", "multiply", "getitem", "where"]
    by_op = {r.op: r for r in t.rows}
    assert by_op["where"].inputs == (0, "0.5")  # ids for tensors on the tape, text otherwise
    assert by_op["where"].saved_bytes == cond.nbytes
    assert by_op["getitem"].saved_bytes == idx.nbytes
    assert by_op["multiply"].inputs == (2, "2.0")
    assert by_op["multiply"].saved_bytes == 3 * 3 * 8  # w[idx]; the Python float counts 0
    assert "const(" not in str(t) and "0.5" in str(t)
    c = np.ones((2, 3))
    assert mg.tape(x * c).rows[0].inputs == (0, "const(2, 3)")


def test_tape_counts_custom_function_saved_arrays() -> None:
    class Square(mg.Function):
        @staticmethod
        def forward(ctx: mg.FunctionCtx, x: np.ndarray) -> np.ndarray:
            ctx.save_for_backward(2 * x)  # a new array: 32 B
            return x * x

        @staticmethod
        def backward(ctx: mg.FunctionCtx, g: np.ndarray) -> np.ndarray:
            return g * ctx.saved[0]

    x = mg.tensor(np.ones(4), requires_grad=True)
    (row,) = mg.tape(Square.apply(x)).rows
    # a Function's primitive reads "xy": input 32 B + output 32 B, plus ctx.saved 32 B
    assert (row.op, row.saved_bytes, row.saved_arrays) == ("Square", 96, 3)


def test_tape_order_is_the_order_backward_runs() -> None:
    log: list[str] = []
    a_op, b_op, c_op = (make_logging_op(n, log) for n in "ABC")

    class D(mg.Function):
        @staticmethod
        def forward(ctx: mg.FunctionCtx, u: np.ndarray, v: np.ndarray) -> np.ndarray:
            return u + v

        @staticmethod
        def backward(ctx: mg.FunctionCtx, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            log.append("D")
            return g, g

    x = mg.tensor([1.0, 2.0], requires_grad=True)
    a = a_op.apply(x)  # a diamond: a feeds both b and c, so a must wait for both
    out = D.apply(b_op.apply(a), c_op.apply(a)).sum()
    listed = mg.tape(out).ops
    out.backward()
    assert listed == ["sum", *log]
    assert log.index("A") > max(log.index("B"), log.index("C"))
    np.testing.assert_array_equal(x.grad, [2.0, 2.0])


def test_tape_of_reused_node_and_of_leaves() -> None:
    a = mg.tensor(2.0, requires_grad=True)
    b = a + a
    c = b * b
    t = mg.tape(c)
    assert t.ops == ["multiply", "add"]
    assert [r.inputs for r in t.rows] == [(1, 1), (0, 0)]
    leaf_only = mg.tape(a, names={"a": a})
    assert (len(leaf_only), [r.name for r in leaf_only.leaves]) == (0, ["a"])
    const = mg.tape(mg.tensor([1.0]) * 2)
    assert (len(const), const.leaves) == (0, [])
    assert "does not require grad" in str(const)


def test_tape_after_backward_says_retain_graph() -> None:
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    loss = (x * x).sum()
    loss.backward(retain_graph=True)
    assert mg.tape(loss).ops == ["sum", "multiply"]  # still there
    loss.backward()
    with pytest.raises(RuntimeError, match=r"tape.*freed.*retain_graph=True"):
        mg.tape(loss)
    with pytest.raises(TypeError, match="expected a Tensor"):
        mg.tape(np.ones(3))  # type: ignore[arg-type]


def test_tape_and_dot_of_100k_ops_deep_graph() -> None:
    # Deeper than any recursion limit: the walk must be iterative.
    x = mg.tensor(1.0, requires_grad=True)
    y = x
    for _ in range(100_000):
        y = y * 1.0
    assert sys.getrecursionlimit() < 100_000
    t = mg.tape(y)
    assert len(t) == 100_000 and t.leaves[0].id == 0
    assert str(t).count("multiply") == 100_000
    assert mg.to_dot(y).count("shape=box") == 100_000


# ---------------------------------------------------------------------------------------------
# to_dot / draw
# ---------------------------------------------------------------------------------------------
def small_graph() -> tuple[mg.Tensor, dict[str, mg.Tensor]]:
    w = mg.tensor(np.ones((3, 2)), requires_grad=True)
    b = mg.tensor(np.zeros(2), requires_grad=True)
    x = np.arange(12.0).reshape(4, 3)
    loss = ((x @ w + b).tanh() * 0.5).sum()
    return loss, {'w "weight"': w, "b": b}  # a quote in a name must be escaped


def test_to_dot_structure() -> None:
    loss, names = small_graph()
    src = mg.to_dot(loss, names=names)
    assert src.startswith("digraph tape {") and src.rstrip().endswith("}")
    boxes = re.findall(r'^\s*(op\d+) \[shape=box.*label="(\w+)\\nVJP #(\d+)"', src, re.M)
    assert [(op, int(step)) for _, op, step in boxes] == [
        ("matmul", 5), ("add", 4), ("tanh", 3), ("multiply", 2), ("sum", 1)]
    tensors = re.findall(r"^\s*(t\d+) \[shape=ellipse, label=\"([^\"\\]*(?:\\.[^\"\\]*)*)\"(.*)\];",
                         src, re.M)
    assert len(tensors) == 7  # 2 leaves + 5 op outputs
    filled = [label for _, label, style in tensors if "filled" in style]
    assert filled == ['%0 w \\"weight\\"\\n(3, 2) float64', "%2 b\\n(2,) float64"]
    assert [label for _, label, style in tensors if "peripheries=2" in style] == [
        "%6\\n() float64"]
    assert src.count("style=dashed, color") == 2  # the constant x and the scalar 0.5
    assert 'label="const(4, 3)"' in src and 'label="0.5"' in src
    declared = set(re.findall(r"^\s*(\w+) \[", src, re.M))
    edges = re.findall(r"^\s*(\w+) -> (\w+)", src, re.M)
    assert len(edges) == 13 and {n for e in edges for n in e} <= declared


def test_to_dot_draws_a_shared_constant_once_per_array_the_tape_holds() -> None:
    """A constant two ops use is one node while the tape holds one array for it: ops that do
    not read it (add, subtract) keep the caller's array. An op whose VJP reads it keeps its own
    copy (the caller may still write theirs), which is a node of its own."""
    c = np.ones(3)
    x = mg.tensor(np.ones(3), requires_grad=True)
    src = mg.to_dot(x + c - c)
    assert src.count('label="const(3,)"') == 1
    assert len(re.findall(r"^\s*c\d+ -> op\d+", src, re.M)) == 2  # one node, two edges
    src = mg.to_dot(x * c + c)
    assert 1 <= src.count('label="const(3,)"') <= 2
    assert len(re.findall(r"^\s*c\d+ -> op\d+", src, re.M)) == 2


def test_to_dot_of_a_constant_is_a_lone_node() -> None:
    src = mg.to_dot(mg.tensor([1.0, 2.0]))
    assert "not on a tape" in src and "->" not in src


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz `dot` not installed")
def test_dot_binary_parses_the_output() -> None:
    loss, names = small_graph()
    done = subprocess.run(["dot", "-Tsvg"], input=mg.to_dot(loss, names), capture_output=True,
                          text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    assert "<svg" in done.stdout and "matmul" in done.stdout and "weight" in done.stdout


def test_draw_without_the_graphviz_package_says_what_to_install(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "graphviz", None)  # makes `import graphviz` fail
    loss, _ = small_graph()
    with pytest.raises(ImportError,
                       match=r"pip install -e '\.\[viz\]' in your clone.*apt-get install"):
        mg.draw(loss, tmp_path / "g.svg")


def test_draw_without_dot_says_what_to_install(monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    pytest.importorskip("graphviz")
    monkeypatch.setenv("PATH", str(tmp_path))  # no `dot` here
    loss, _ = small_graph()
    with pytest.raises(RuntimeError, match=r"`dot` program was not found.*apt-get install"):
        mg.draw(loss, tmp_path / "g.svg")


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz `dot` not installed")
def test_draw_renders_svg(tmp_path: Path) -> None:
    pytest.importorskip("graphviz")
    loss, names = small_graph()
    path = mg.draw(loss, tmp_path / "graph.svg", names=names)
    assert path == tmp_path / "graph.svg"
    assert "<svg" in path.read_text() and not (tmp_path / "graph").exists()


# ---------------------------------------------------------------------------------------------
# detect_anomaly
# ---------------------------------------------------------------------------------------------
def two_layer_model(x: np.ndarray, w1: mg.Tensor, w2: mg.Tensor) -> mg.Tensor:
    h = (x @ w1).tanh()
    scores = h @ w2  # some entries are negative
    log_scores = scores.log()  # anomaly: log here
    return (log_scores * 2.0).mean()


def model_inputs() -> tuple[np.ndarray, mg.Tensor, mg.Tensor]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 4))
    return (x, mg.tensor(rng.normal(size=(4, 3)), requires_grad=True),
            mg.tensor(rng.normal(size=(3, 2)), requires_grad=True))


@pytest.mark.filterwarnings("ignore:invalid value encountered in log")
def test_anomaly_catches_log_of_negative_at_the_log() -> None:
    x, w1, w2 = model_inputs()
    with pytest.raises(RuntimeError) as info, mg.detect_anomaly():
        two_layer_model(x, w1, w2)
    msg = str(info.value)
    assert "forward of log" in msg and "NaN" in msg
    assert "(5, 2)" in msg  # the shapes
    assert f"{HERE}:{line_of('anomaly: log here')}" in msg
    # raised inside the log call, before the multiply or the mean ran
    frames = [e for e in info.traceback if Path(str(e.path)) == HERE]
    assert frames[-1].lineno + 1 == line_of("anomaly: log here")  # pytest counts from 0


@pytest.mark.filterwarnings("ignore:invalid value encountered in log")
def test_without_anomaly_mode_the_same_code_runs_and_gives_nan() -> None:
    x, w1, w2 = model_inputs()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not even a warning from minigrad itself...
        warnings.filterwarnings("ignore", "invalid value encountered in log")  # ...only NumPy's
        loss = two_layer_model(x, w1, w2)
    assert np.isnan(loss.item())  # silently NaN: what anomaly mode is for
    loss.backward()  # log's VJP (g / x) is finite even where log x is not
    assert w1.grad is not None


@pytest.mark.filterwarnings("ignore:invalid value encountered in log")
def test_anomaly_mode_ends_with_the_block_even_after_an_error() -> None:
    x, w1, w2 = model_inputs()
    with pytest.raises(RuntimeError), mg.detect_anomaly():
        two_layer_model(x, w1, w2)
    assert np.isnan(two_layer_model(x, w1, w2).item())  # no raise: mode is off again


@pytest.mark.filterwarnings("ignore:divide by zero")
def test_anomaly_catches_inf_born_in_a_vjp() -> None:
    x = mg.tensor([0.0, 1.0, 4.0], requires_grad=True)  # sqrt(0) = 0 is fine; its slope is not
    with pytest.raises(RuntimeError) as info, mg.detect_anomaly():
        r = x.sqrt()  # anomaly: sqrt here
        loss = (r * 3.0).sum()
        loss.backward()
    msg = str(info.value)
    assert "VJP of sqrt" in msg and "Inf" in msg and "(3,)" in msg
    assert f"{HERE}:{line_of('anomaly: sqrt here')}" in msg


def test_anomaly_catches_nan_in_a_custom_function_vjp() -> None:
    class Broken(mg.Function):
        @staticmethod
        def forward(ctx: mg.FunctionCtx, x: np.ndarray) -> np.ndarray:
            return 2 * x

        @staticmethod
        def backward(ctx: mg.FunctionCtx, g: np.ndarray) -> np.ndarray:
            return g * np.nan

    x = mg.tensor(np.ones((2, 2)), requires_grad=True)
    with pytest.raises(RuntimeError, match=r"VJP of Broken \(input 0\) produced NaN.*\(2, 2\)"):
        with mg.detect_anomaly():
            Broken.apply(x).sum().backward()


@pytest.mark.filterwarnings("ignore:overflow encountered in exp")
def test_anomaly_catches_inf_in_forward_of_untracked_values_too() -> None:
    with pytest.raises(RuntimeError, match=r"forward of exp produced Inf"):
        with mg.detect_anomaly():
            mg.exp(mg.tensor([1000.0]))


@pytest.mark.filterwarnings("ignore:divide by zero")
def test_anomaly_in_a_recorded_vjp_names_the_op_whose_vjp_it_is() -> None:
    # hessian records sqrt's VJP ḡ/(2y); at y = 0 the division inside it makes the Inf
    with pytest.raises(RuntimeError, match=r"forward of divide inside the VJP of sqrt"):
        with mg.detect_anomaly():
            mg.hessian(lambda t: t.sqrt().sum(), np.array([0.0, 1.0]))


@pytest.mark.filterwarnings("ignore:divide by zero")
def test_anomaly_does_not_misname_the_creating_line() -> None:
    x = mg.tensor([0.0, 1.0], requires_grad=True)
    loss = x.sqrt().sum()  # recorded outside the block
    with pytest.raises(RuntimeError) as info, mg.detect_anomaly():
        loss.backward()  # anomaly: backward outside
    assert f":{line_of('anomaly: backward outside')}:" not in str(info.value)


@pytest.mark.filterwarnings("ignore:invalid value encountered in log")
@pytest.mark.parametrize("filename", ["<string>", "minigrad_examples/demo.py"])
def test_anomaly_names_user_code_beside_the_package_and_in_strings(filename: str) -> None:
    """A user's file in a folder named like the package (minigrad_examples/, next to minigrad/)
    and code run from a string are the user's: the message names their line."""
    package = Path(mg.__file__).resolve().parent
    name = filename if filename.startswith("<") else str(package.parent / filename)
    code = compile("x = mg.tensor([-1.0], requires_grad=True)\nx.log()\n", name, "exec")
    with pytest.raises(RuntimeError) as info, mg.detect_anomaly():
        exec(code, {"mg": mg})
    assert f"created at {name}:2" in str(info.value)
