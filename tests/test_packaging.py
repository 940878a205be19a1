"""The repository's launchers/ folder is installed as ipcluster.launchers: a user's own
`launchers` package in the working directory breaks nothing (with a regular and an editable
install), and the wheel holds one top-level package, `ipcluster`."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Run from a directory holding an unrelated `launchers` package: it comes first on sys.path,
# in this script and in the controller and engines (`python -m` puts the directory first too).
CHECK = """
import os, launchers, ipcluster, ipcluster.launchers
assert launchers.OWNER == "the user", launchers
assert ipcluster.launchers.get("local").__module__ == "ipcluster.launchers.local"
with ipcluster.Cluster(n=1) as rc:
    print("engine in", rc[0].apply_sync(os.getcwd))
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out),
                            str(ROOT)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    (path,) = out.glob("ipcluster-*.whl")
    return path


def test_the_wheel_has_one_top_level_package(wheel):
    with zipfile.ZipFile(wheel) as zf:
        tops = {name.split("/")[0] for name in zf.namelist()}
        names = zf.namelist()
    assert {t for t in tops if not t.endswith(".dist-info")} == {"ipcluster"}
    assert "ipcluster/launchers/slurm.py" in names


def _venv(where: Path, install: list[str]) -> Path:
    """A venv that sees this one's dependencies (not its ipcluster) and installs ipcluster."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True, timeout=120)
    purelib = subprocess.run([str(where / "bin" / "python"), "-c",
                              "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    # a plain path line: this venv's .pth files (its editable ipcluster) are not processed
    (Path(purelib) / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    done = subprocess.run([sys.executable, "-m", "pip", "--python", str(where / "bin" / "python"),
                           "install", "--no-deps", "-q", *install], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return where / "bin"


@pytest.mark.parametrize("kind", ["regular", "editable"])
def test_a_users_launchers_package_breaks_nothing(kind, wheel, tmp_path):
    bin_dir = _venv(tmp_path / "venv", [str(wheel)] if kind == "regular" else ["-e", str(ROOT)])
    work = tmp_path / "work"
    (work / "launchers").mkdir(parents=True)
    (work / "launchers" / "__init__.py").write_text('OWNER = "the user"\n')
    env = {**os.environ, "PYTHONPATH": ""}
    where = subprocess.run([str(bin_dir / "python"), "-c", "import ipcluster; print(ipcluster.__file__)"],
                           cwd=work, env=env, capture_output=True, text=True, timeout=60)
    assert (str(ROOT) in where.stdout) == (kind == "editable"), where
    ran = subprocess.run([str(bin_dir / "python"), "-c", CHECK], cwd=work, env=env,
                         capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    assert f"engine in {work}" in ran.stdout
    cli = str(bin_dir / "ipcluster")
    started = subprocess.run([cli, "start", "-n", "1", "--daemonize", "--cluster-id", f"pkg-{kind}"],
                             cwd=work, env=env, capture_output=True, text=True, timeout=120)
    stopped = subprocess.run([cli, "stop", f"pkg-{kind}"], cwd=work, env=env,
                             capture_output=True, text=True, timeout=120)
    assert started.returncode == 0, started.stderr
    assert "running in the background with 1 engines" in started.stdout
    assert stopped.returncode == 0, stopped.stderr
