"""The notebook experience in a real Jupyter kernel (ipykernel, driven by jupyter_client and
nbclient): %px output read back from the cell's outputs, Ctrl-C as the kernel's interrupt, the
progress widget, and the example notebooks, executed from top to bottom."""

from __future__ import annotations

import importlib.util
import shutil
import sys
import time
from pathlib import Path

import pytest

from tests.launchers.conftest import require

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
jupyter_client = pytest.importorskip("jupyter_client")
pytest.importorskip("ipykernel")

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _have_mpi() -> bool:
    beside = Path(sys.executable).parent / "mpiexec"
    return importlib.util.find_spec("mpi4py") is not None and (
        beside.exists() or shutil.which("mpiexec") is not None)


@pytest.fixture(scope="module")
def kernel(cluster):
    """A Jupyter kernel with a client of the module's cluster as `rc` (so %px is active)."""
    km, kc = jupyter_client.manager.start_new_kernel(kernel_name="python3", startup_timeout=60)
    try:
        content, _ = execute(kc, f"import ipcluster\nrc = ipcluster.Client({str(cluster.connection_file)!r})\n"
                                 f"rc.wait_for_engines({cluster.n}, timeout=30)")
        assert content["status"] == "ok", content
        yield km, kc
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def execute(kc, code: str, timeout: float = 60, on_output=None):
    """Run a cell; its execute_reply content and its outputs (iopub messages), in order.
    `on_output(outputs)` is called as each output arrives."""
    msg_id = kc.execute(code)
    outputs = []
    deadline = time.monotonic() + timeout
    while True:
        msg = kc.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind = msg["msg_type"]
        if kind == "status" and msg["content"]["execution_state"] == "idle":
            outputs.append(msg)  # last: when the cell returned
            break
        if kind in ("stream", "display_data", "execute_result", "error"):
            outputs.append(msg)
            if on_output is not None:
                on_output(outputs)
    while True:
        reply = kc.get_shell_msg(timeout=max(0.1, deadline - time.monotonic()))
        if reply["parent_header"].get("msg_id") == msg_id:
            return reply["content"], outputs[:-1]


def text(outputs, name: str = "stdout") -> str:
    return "".join(m["content"]["text"] for m in outputs
                   if m["msg_type"] == "stream" and m["content"]["name"] == name)


def test_px_in_a_kernel_streams_prints_displays_results_and_errors(kernel):
    km, kc = kernel
    content, outputs = execute(kc, "%px import numpy as np")
    assert content["status"] == "ok" and outputs == []
    content, _ = execute(kc, "%px a = np.random.rand(3)")
    assert content["status"] == "ok"
    content, outputs = execute(kc, "%px a.shape")
    assert all(f"Out[{eid}:" in text(outputs) for eid in range(4))

    content, outputs = execute(kc, """%%px --targets ::2
import sys
from IPython.display import HTML, display
print("printed")
print("warned", file=sys.stderr)
display(HTML("<b>shown</b>"))
raise ValueError("bad value")
""")
    # streamed: the errors were shown on stderr as they came; the cell's error says how many
    assert content["status"] == "error" and content["ename"] == "AlreadyDisplayedError"
    out, err = text(outputs), text(outputs, "stderr")
    assert "[stdout:0] printed" in out and "[stdout:2] printed" in out
    assert "[stderr:0] warned" in err and "[stderr:2] warned" in err
    assert "[stdout:1]" not in out and "[stdout:3]" not in out
    html = [m["content"]["data"]["text/html"] for m in outputs if m["msg_type"] == "display_data"]
    assert html == ["<b>shown</b>", "<b>shown</b>"]
    errors = [m for m in outputs if m["msg_type"] == "error"]
    assert len(errors) == 1 and errors[0]["content"]["traceback"] == ["2 errors"]
    assert err.count("[0:execute]") == 1 and err.count("[2:execute]") == 1
    assert err.count("ValueError: bad value") == 2 and "----> 6 raise" in err


def test_syntax_error_in_a_kernel_cell_is_reported_once_per_engine(kernel):
    km, kc = kernel
    content, outputs = execute(kc, "%%px\nfor i in range(3)\n    pass")
    assert content["status"] == "error"
    traceback = text(outputs, "stderr")  # streamed as they came
    for eid in range(4):
        assert traceback.count(f"[{eid}:execute]") == 1
    assert traceback.count("for i in range(3)") == 4 and traceback.count("SyntaxError") == 4


def test_wait_interactive_is_a_widget_in_jupyter(kernel):
    pytest.importorskip("ipywidgets")
    km, kc = kernel
    content, outputs = execute(kc, "ar = rc.load_balanced_view().map_async(abs, range(-8, 8))\n"
                                   "ar.wait_interactive()\nsum(ar.get())")
    assert content["status"] == "ok"
    kinds = [set(m["content"]["data"]) for m in outputs if m["msg_type"] == "display_data"]
    assert any("application/vnd.jupyter.widget-view+json" in k for k in kinds)
    assert outputs[-1]["content"]["data"]["text/plain"] == "64"


def test_interrupting_a_kernel_stops_the_engines_within_two_seconds(kernel):
    km, kc = kernel
    sent = {}

    def interrupt_once_all_started(outputs):
        if "sent" not in sent and text(outputs).count("started") == 4:
            sent["sent"] = time.monotonic()
            km.interrupt_kernel()

    content, outputs = execute(kc, "%%px\nimport time\nprint('started', flush=True)\n"
                                   "time.sleep(60)", on_output=interrupt_once_all_started)
    returned = time.monotonic()
    elapsed = returned - sent["sent"]
    print(f"kernel interrupted during %%px on 4 engines: the cell returned {elapsed:.3f} s later")
    assert elapsed < 2, elapsed
    # as ipyparallel: the cell says what it sent and returns
    assert content["status"] == "ok"
    assert "Received Keyboard Interrupt. Sending signal SIGINT to engines..." in text(
        outputs, "stderr")
    content, outputs = execute(kc, "%px print('next')")
    assert content["status"] == "ok" and text(outputs).count("next") == 4


@pytest.mark.timeout(240)
@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.ipynb")))
def test_example_notebook_runs_without_error(name, tmp_path):
    if name == "mpi.ipynb":
        require(_have_mpi(), "mpi4py and an mpiexec, for examples/mpi.ipynb")
    nb = nbformat.read(EXAMPLES / name, as_version=4)
    nbclient.NotebookClient(nb, timeout=180, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs
              if o.output_type == "error"]
    expected = [c for c in nb.cells if "raises-exception" in c.metadata.get("tags", [])]
    assert len(errors) == len(expected)
