"""docs/walkthrough.ipynb runs top to bottom in a Jupyter kernel of this interpreter, without
Graphviz, and shows the tape as an HTML table."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "docs" / "walkthrough.ipynb"


def kernel_of_this_interpreter(tmp: Path) -> KernelManager:
    """A kernel manager that starts ipykernel on sys.executable, whatever kernels the machine
    has installed; IPython's files go to tmp."""
    spec = tmp / "kernels" / "minigrad-test"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}",
                 "--HistoryManager.enabled=False"],
        "display_name": "minigrad tests", "language": "python",
        "env": {"IPYTHONDIR": str(tmp / "ipython"), "MPLBACKEND": "agg"},
    }))
    specs = KernelSpecManager(kernel_dirs=[str(tmp / "kernels")])
    # unix sockets in tmp rather than TCP ports
    return KernelManager(kernel_name="minigrad-test", kernel_spec_manager=specs,
                         connection_file=str(tmp / "connection.json"), transport="ipc",
                         ip=str(tmp / "kernel-ipc"))


def test_the_walkthrough_is_stored_without_outputs() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)


def test_the_walkthrough_runs_and_shows_the_tape_table(tmp_path: Path) -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(nb, km=kernel_of_this_interpreter(tmp_path), timeout=60,
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()  # raises CellExecutionError naming the cell if any cell fails
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code)
    outputs = [o for c in code for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    html = [o.data["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    tables = [h for h in html if '<table class="minigrad-tape">' in h]
    assert len(tables) == 1
    for op in ("sum", "tanh", "add", "multiply"):
        assert f"<td>{op}</td>" in tables[0]
    assert "<td>x</td>" in tables[0] and "<td>b</td>" in tables[0]
    printed = "".join(o.text for o in outputs if o.output_type == "stream")
    assert printed.startswith("digraph tape {") and "grad:" in printed
    drawn = outputs[-1].data  # mg.draw(...): the picture, or the DOT source without Graphviz
    assert "image/svg+xml" in drawn or "digraph tape {" in drawn["text/html"]
