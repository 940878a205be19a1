"""The README's first hour, followed literally in a fresh copy of the repository: its first
command (the main job, which makes ./.venv), then its python block and its "From the command
line" block, as a reader types them in that directory."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def block_after(heading: str, language: str = "") -> str:
    """The first fenced block (of `language`) after `heading`."""
    rest = README[README.index(heading):]
    return re.search(rf"```{language}\n(.*?)```", rest, re.S)[1]


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    """A fresh copy of the repository (tracked and new files, as a clone of this tree would be)."""
    if not shutil.which("git") or not (ROOT / ".git").exists():
        pytest.fail("the README test copies the repository with git ls-files; run it from a checkout")
    where = tmp_path_factory.mktemp("readme") / "ipcluster"
    files = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, check=True).stdout.split(b"\0")
    for name in filter(None, (f.decode() for f in files)):
        if (ROOT / name).is_file() and not name.startswith(".venv/"):
            (where / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, where / name)
    return where


@pytest.mark.timeout(600)
def test_the_first_hour_of_the_readme_works_literally(checkout):
    first = block_after("## Quick start").strip()
    assert first == "bash examples/main-job.sh"
    main_job = subprocess.run(["bash", "-c", first], cwd=checkout, capture_output=True, text=True,
                              timeout=500)
    assert main_job.returncode == 0, main_job.stdout + main_job.stderr
    assert "first chaotic r" in main_job.stdout
    assert "lyapunov-sweep" in main_job.stderr  # the progress bar, labelled

    python = subprocess.run([str(checkout / ".venv" / "bin" / "python"), "-c",
                             block_after("Interactive parallel computing", "python")],
                            cwd=checkout, capture_output=True, text=True, timeout=120)
    assert python.returncode == 0, python.stderr
    assert "[0, 1, 4, 9, 16, 25, 36, 49, 64, 81]" in python.stdout and "42" in python.stdout

    commands = block_after("## From the command line")
    assert commands.startswith("source .venv/bin/activate")
    script = "set -euo pipefail\ntrap '.venv/bin/ipcluster stop --all >/dev/null 2>&1 || true' EXIT\n"
    shell = subprocess.run(["bash", "-c", script + commands], cwd=checkout, capture_output=True,
                           text=True, timeout=300,
                           env={k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"})
    assert shell.returncode == 0, shell.stdout + shell.stderr
    out = shell.stdout
    assert "running in the background with 4 engines" in out
    assert "[0, 1, 2, 3]" in out
    assert re.search(r"default\s+running\s+4", out)
    assert "4 engines; 0 tasks queued" in out
    assert "cluster 'default' stopped" in out
    assert str(checkout) in subprocess.run(  # the venv's ipcluster, not this test's
        ["bash", "-c", "source .venv/bin/activate && python -c 'import ipcluster; print(ipcluster.__file__)'"],
        cwd=checkout, capture_output=True, text=True, timeout=60).stdout
