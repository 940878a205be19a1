"""Every script in examples/ runs to the end, on small sizes (the notebooks there are run by
tests/test_notebooks.py)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_docs import have_mpi
from tests.launchers.conftest import require

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

# small sizes, so that the scripts run in seconds on a busy two-core machine
ARGS = {
    "sweep.py": ["--engines", "2", "--points", "24"],
    "sweep_progress.py": ["--engines", "2", "--points", "8"],
    "montecarlo.py": ["--engines", "2", "--samples", "20000", "--batches", "8"],
    "mpi_allreduce.py": ["--terms", "20000"],
    "dask_dataframe.py": ["--engines", "2", "--rows", "5000"],
    "joblib_parallel.py": ["--engines", "2", "--samples", "300"],
}
# what each script prints when it worked
EXPECT = {
    "sweep.py": "first chaotic r",
    "sweep_progress.py": "0 chunks computed, 16 fetched; results identical",
    "montecarlo.py": "pi ~ 3.1",
    "mpi_allreduce.py": "engine 3 is rank 3",
    "dask_dataframe.py": "the same through view.dask_get: True",
    "joblib_parallel.py": "on a given cluster",
}
SCRIPTS = sorted(p.name for p in EXAMPLES.glob("*.py"))


def test_every_script_has_small_sizes_and_an_expected_line():
    assert set(SCRIPTS) == set(ARGS) == set(EXPECT)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("name", SCRIPTS)
def test_example_script_runs(name):
    if name == "mpi_allreduce.py":
        require(have_mpi(), "mpi4py and an mpiexec, for examples/mpi_allreduce.py")
    if name == "dask_dataframe.py":
        assert importlib.util.find_spec("distributed"), "the test extra installs distributed"
    # as in an activated virtual environment: its mpiexec first
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    out = subprocess.run([sys.executable, str(EXAMPLES / name), *ARGS[name]], env=env,
                         capture_output=True, text=True, timeout=540)
    assert out.returncode == 0, f"examples/{name} failed:\n{out.stdout}\n{out.stderr}"
    assert EXPECT[name] in out.stdout, out.stdout
