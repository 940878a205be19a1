"""Make and reuse one virtual environment per peer, so the peers never share an interpreter.

ipyparallel installs a command named ``ipcluster`` and a module tree of its own, so it lives in
``benchmarks/.venvs/ipyparallel``; dask.distributed in ``benchmarks/.venvs/dask``. ipcluster
itself and ProcessPoolExecutor run from the interpreter that runs the suite (the repo's venv).
A venv is reused while its recorded requirements match; otherwise it is made anew.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent / ".venvs"

# What each peer's venv holds: the peer pinned as the issue states, numpy for the arrays, and
# psutil for memory figures (both peers depend on it already; named so the intent is plain).
REQUIREMENTS = {
    "ipyparallel": ["ipyparallel==9.2.0", "numpy", "psutil"],
    "dask": ["distributed", "numpy", "psutil"],
}


def python_for(peer: str) -> str:
    """The interpreter that runs `peer`'s measurements, making its venv first if needed."""
    if peer not in REQUIREMENTS:
        return sys.executable
    venv = ROOT / peer
    python = venv / "bin" / "python"
    stamp = venv / "requirements.json"
    wanted = REQUIREMENTS[peer]
    if python.exists() and stamp.exists() and json.loads(stamp.read_text()) == wanted:
        return str(python)
    shutil.rmtree(venv, ignore_errors=True)
    print(f"making {venv} with {' '.join(wanted)} ...", file=sys.stderr, flush=True)
    subprocess.run([_base_python(), "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    *wanted], check=True)
    stamp.write_text(json.dumps(wanted))
    return str(python)


def versions(python: str, modules: list[str]) -> dict:
    """Installed versions of `modules` as seen by `python` (for the JSON record)."""
    code = ("import importlib.metadata as m, json, sys; "
            "print(json.dumps({n: m.version(n) for n in sys.argv[1:]}))")
    out = subprocess.run([python, "-c", code, *modules], capture_output=True, text=True)
    return json.loads(out.stdout) if out.returncode == 0 else {}


def _base_python() -> str:
    # a venv made from inside another venv must start from the real interpreter, or it would
    # inherit nothing useful and, on some setups, point at the outer venv's python
    return getattr(sys, "_base_executable", None) or sys.executable
