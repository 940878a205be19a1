"""The documentation site: it builds with warnings as errors, and its examples run.

Every ``python`` block of a page runs, in order, in one namespace per page (as a reader would
type them into one session); every ``sh`` block runs in bash. ``bash`` blocks are job scripts
and install steps shown for reading, and blocks without a language are output.

A page's `Cluster` with a site launcher (Slurm, PBS, SSH hosts, ...) cannot start here: it is
built for real (so its options are checked against the launcher's schema) and its job script
rendered, and then its ``with`` block is skipped. Clusters a page leaves running (as a
notebook would) are stopped after the page.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import ipcluster
from tests.launchers.conftest import require

DOCS = Path(__file__).resolve().parent.parent / "docs"
FENCE = re.compile(r"^```(\w[\w-]*)\s*$")
RUNNABLE = {"python", "sh"}
HERE = {"local", "mpi"}  # launchers that start engines on this machine


def code_blocks(page: Path) -> list[tuple[str, int, str]]:
    """``(language, first line number, code)`` of each fenced block of `page`."""
    blocks, language, start, lines = [], None, 0, []
    for number, line in enumerate(page.read_text().splitlines(), 1):
        if language is None:
            match = FENCE.match(line)
            if match:
                language, start, lines = match.group(1), number + 1, []
            elif line.startswith("```"):
                language, start, lines = "", number + 1, []
        elif line.startswith("```"):
            blocks.append((language, start, "\n".join(lines) + "\n"))
            language = None
        else:
            lines.append(line)
    return blocks


PAGES = sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")
               if "_build" not in p.parts)
# api.md is generated from the docstrings (docs/reference.py): signatures and sketches, not a session
RUN_PAGES = [p for p in PAGES if p != "api.md"
             and any(lang in RUNNABLE for lang, _, _ in code_blocks(DOCS / p))]
# reST or MyST directive text that reached a built page unrendered (e.g. autodoc's output read
# as Markdown shows ".. py:class::" as text)
UNRENDERED = re.compile(r"^\s*\.\. [a-z]+(:[a-z]+)?::|```\{|\{(autoclass|automodule|autofunction)\}", re.M)


class SiteExample(Exception):
    """Raised where a site launcher's cluster would start: the rest of its block is skipped."""


class DocCluster(ipcluster.Cluster):
    made: list = []

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        DocCluster.made.append(self)

    def _check_here(self) -> None:
        if self.launcher_name not in HERE:
            self.script = self.engines_script()
            raise SiteExample(self.script)

    def __enter__(self):
        self._check_here()
        return super().__enter__()

    def start_and_connect_sync(self):
        self._check_here()
        return super().start_and_connect_sync()


def have_mpi() -> bool:
    beside = Path(sys.executable).parent / "mpiexec"
    return importlib.util.find_spec("mpi4py") is not None and (
        beside.exists() or shutil.which("mpiexec") is not None)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site, built once with warnings as errors."""
    require(importlib.util.find_spec("sphinx") is not None
            and importlib.util.find_spec("myst_parser") is not None,
            "sphinx and myst-parser (`pip install -e .[docs]`)")
    html = tmp_path_factory.mktemp("site") / "html"
    out = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
                          str(DOCS), str(html)], capture_output=True, text=True, timeout=540)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stderr.strip() == "", out.stderr
    return html


@pytest.mark.timeout(600)
def test_the_site_builds_without_warnings(site):
    api = (site / "api.html").read_text()
    for name in ("become_dask", "dask_get", "register_joblib_backend", "ViewExecutor",
                 "shutdown_atexit", "CompositeError"):
        assert name in api, f"{name} is missing from the API reference"


def page_text(html: str) -> str:
    import html as entities

    return entities.unescape(re.sub(r"<[^>]+>", "", html))


def test_no_built_page_shows_unrendered_directives(site):
    shown = {}
    for page in sorted(site.rglob("*.html")):
        found = UNRENDERED.search(page_text(page.read_text()))
        if found:
            shown[str(page.relative_to(site))] = found.group(0).strip()
    assert not shown, f"directive text shown as text on built pages: {shown}"
    assert UNRENDERED.search(page_text("<p>.. py:class:: ipcluster.Cluster</p>"))  # the check works


def test_docs_api_md_is_generated_from_the_current_docstrings():
    out = subprocess.run([sys.executable, str(DOCS / "reference.py"), "--check"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def test_the_quick_start_code_fits_its_box(site, tmp_path):
    from tests.dashboard.conftest import CHROMEDRIVER, CHROMIUM, chromium

    require(bool(shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)),
            "headless Chromium (Debian's chromium and chromium-driver)")
    browser = chromium(1280, 900)  # a laptop's window
    try:
        overflowing = {}
        for page in ("index.html", "api.html"):
            browser.get((site / page).as_uri())
            overflowing[page] = browser.execute_script(
                "return Array.from(document.querySelectorAll('pre'))"
                ".filter(p => p.scrollWidth > p.clientWidth + 1)"
                ".map(p => p.textContent.split('\\n').reduce((a, b) => b.length > a.length ? b : a))")
        assert browser.execute_script("return document.querySelectorAll('pre').length") > 10
        if any(overflowing.values()):
            browser.save_screenshot(str(tmp_path / "page.png"))
        assert overflowing == {"index.html": [], "api.html": []}, f"lines too wide for their box (screenshot {tmp_path / 'page.png'})"
    finally:
        browser.quit()


def test_code_blocks_are_found():
    blocks = [b for p in PAGES for b in code_blocks(DOCS / p)]
    assert sum(lang == "python" for lang, _, _ in blocks) >= 15
    assert sum(lang == "sh" for lang, _, _ in blocks) >= 2


@pytest.mark.timeout(900)
@pytest.mark.parametrize("page", RUN_PAGES)
def test_the_examples_of_a_page_run(page, monkeypatch, tmp_path):
    if "engines=\"mpi\"" in (DOCS / page).read_text():
        require(have_mpi(), "mpi4py and an mpiexec, for the MPI examples")
    # as in an activated virtual environment: its mpiexec (the one mpi4py was built for) first
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(ipcluster, "Cluster", DocCluster)
    monkeypatch.setattr(DocCluster, "made", [])
    namespace = {"__name__": "__main__"}  # as a script: functions travel by value
    try:
        for language, line, code in code_blocks(DOCS / page):
            where = f"docs/{page}, the {language} block at line {line}"
            if language == "python":
                run_python(code, namespace, where)
            elif language == "sh":
                run_sh(code, tmp_path, where)
    finally:
        for cluster in DocCluster.made:
            if cluster.controller is not None:
                cluster.stop_cluster_sync()


def run_python(code: str, namespace: dict, where: str) -> None:
    try:
        exec(compile(code, where, "exec"), namespace)
    except SiteExample as site:
        assert site.args[0].strip(), f"{where}: the site launcher rendered no job script"


def run_sh(code: str, cwd: Path, where: str) -> None:
    env = dict(os.environ)  # PATH starts with the environment's bin (see above)
    # a failing step must not leave a daemonized cluster behind
    script = "set -euo pipefail\ntrap 'ipcluster stop >/dev/null 2>&1 || true' EXIT\n" + code
    out = subprocess.run(["bash", "-c", script], cwd=cwd, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, f"{where} failed:\n{out.stdout}\n{out.stderr}"
