"""ipyparallel's own test suite, run against ipcluster: how much of what ipyparallel users
rely on holds unchanged with ``import ipcluster as ipp``.

    wheel (pip download ipyparallel==9.2.0, checked against its sha256, cached)
      -> ipyparallel/tests/<FILES> extracted into a scratch folder, imports rewritten by table.py
      -> pytest in a subprocess with plugin.py (ipyparallel unimportable, upstream's fixtures)
      -> each item's outcome -> "compat: P of T ipyparallel tests pass"

Nothing of ipyparallel is kept in this repository: only the names of the items its own run
collects (collected.txt, from ``pytest --collect-only -q`` over FILES with ipyparallel 9.2.0
installed), the ones excluded as tests of its internals (exclusions.txt), the ones it marks
xfail or skip itself (upstream_marked.txt, listed apart) and the deliberate differences
(differences.txt, each documented in docs/migration.md), and, while work on them goes on,
the known failures not fixed yet (pending.txt: a ratchet, it only shrinks). T is collected
minus excluded minus upstream-marked; an item that fails, errors, is skipped
or is not collected does not pass.

``python -m tests.compat.suite [pytest args]`` runs it and prints the figure per file.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tests.compat import table

HERE = Path(__file__).parent
REPO = HERE.parent.parent
VERSION = "9.2.0"
WHEEL = f"ipyparallel-{VERSION}-py3-none-any.whl"
SHA256 = "3d62ffa1f7bb6372c325e4e59798d2ad4ef4c8a43fb7461b97adba7d7951cadd"
FILES = ["test_view", "test_lbview", "test_asyncresult", "test_client", "test_magics",
         "test_dependency", "test_remotefunction", "test_executor", "test_joblib",
         "test_cluster", "test_view_broadcast", "test_label"]
HELPERS = ["clienttest"]  # upstream helpers the test files import, rewritten the same way
CACHE = Path(os.environ.get("IPCLUSTER_COMPAT_CACHE",
                            Path.home() / ".cache" / "ipcluster-compat"))


def listed(name: str) -> dict[str, str]:
    """``item -> reason`` from one of the listing files (``item -- reason`` per line)."""
    entries = {}
    for line in (HERE / name).read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            item, _, reason = line.partition(" -- ")
            entries[item.strip()] = reason.strip()
    return entries


def fetch(cache: Path = CACHE) -> Path:
    """The ipyparallel wheel, downloaded once with pip and checked against SHA256."""
    wheel = cache / WHEEL
    if not wheel.exists():
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", f"ipyparallel=={VERSION}",
                        "--no-deps", "--only-binary=:all:", "--quiet", "-d", str(cache)],
                       check=True)
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != SHA256:
        raise RuntimeError(f"{wheel} has sha256 {digest}, expected {SHA256}; delete it and "
                           "run again to download it afresh")
    return wheel


def extract(wheel: Path, scratch: Path) -> Path:
    """The test files, their imports rewritten through table.py, as the package `upstream`."""
    package = scratch / table.SUITE_PACKAGE
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text("")
    with zipfile.ZipFile(wheel) as z:
        for name in FILES + HELPERS:
            source = z.read(f"ipyparallel/tests/{name}.py").decode()
            (package / f"{name}.py").write_text(table.rewrite(source))
    (scratch / "pytest.ini").write_text(
        "[pytest]\ntimeout = 90\nfilterwarnings =\n    ignore::DeprecationWarning\n")
    return package


@dataclass
class Result:
    outcomes: dict[str, str]  # item -> passed, failed, error, skipped, xfailed, xpassed
    errors: dict[str, str] = field(default_factory=dict)  # item or file -> what went wrong
    collected: list[str] = field(default_factory=list)
    excluded: dict[str, str] = field(default_factory=dict)
    marked: dict[str, str] = field(default_factory=dict)

    def outcome(self, item: str) -> str:
        if item in self.outcomes:
            return self.outcomes[item]
        return "not collected"

    @property
    def counted(self) -> list[str]:
        """The T items."""
        return [i for i in self.collected if i not in self.excluded and i not in self.marked]

    @property
    def passed(self) -> list[str]:
        return [i for i in self.counted if self.outcome(i) == "passed"]

    @property
    def failed(self) -> list[str]:
        return [i for i in self.counted if self.outcome(i) != "passed"]

    def per_file(self) -> dict[str, tuple[int, int]]:
        files: dict[str, list[int]] = {}
        for item in self.counted:
            counts = files.setdefault(item.split("::")[0], [0, 0])
            counts[0] += self.outcome(item) == "passed"
            counts[1] += 1
        return {f: (p, t) for f, (p, t) in files.items()}

    def summary(self) -> str:
        return f"compat: {len(self.passed)} of {len(self.counted)} ipyparallel tests pass"

    def report(self, differences: dict[str, str] | None = None) -> str:
        differences = differences or {}
        lines = [self.summary()]
        for name, (p, t) in self.per_file().items():
            lines.append(f"  {name:28} {p:3} of {t:3}")
        kinds = Counter(self.outcome(i) for i in self.marked)
        lines.append(f"  ipyparallel's own xfail/skip items, apart: {len(self.marked)} "
                     f"({', '.join(f'{n} {k}' for k, n in sorted(kinds.items()))})")
        lines.append(f"  excluded as tests of ipyparallel internals: {len(self.excluded)}")
        pending = listed("pending.txt")
        lines.append(f"  known failures not fixed yet (pending.txt): "
                     f"{sum(i in pending for i in self.failed)}")
        for item in self.failed:
            if item not in pending:
                why = differences.get(item, "NOT A DOCUMENTED DIFFERENCE")
                lines.append(f"  {self.outcome(item):13} {item} -- {why}")
        return "\n".join(lines)


def run(scratch: Path, pytest_args: list[str] = ()) -> Result:
    """Extract the suite into `scratch` and run it there; the outcome of every item."""
    extract(fetch(), scratch)
    report = scratch / "report.json"
    env = {**os.environ, "IPCLUSTER_COMPAT_REPORT": str(report),
           # engines import the test modules by name, as upstream's engines can
           "PYTHONPATH": os.pathsep.join([str(REPO), str(scratch),
                                          os.environ.get("PYTHONPATH", "")])}
    env.setdefault("IPCLUSTER_DIR", str(scratch / "clusters"))
    subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                    "-p", "tests.compat.plugin", "-q", "--no-header", "-rN",
                    table.SUITE_PACKAGE, *pytest_args],
                   cwd=scratch, env=env, stdin=subprocess.DEVNULL)
    data = json.loads(report.read_text()) if report.exists() else {"outcomes": {}, "errors": {}}
    return Result(data["outcomes"], data["errors"],
                  collected=list(listed_items()),
                  excluded=listed("exclusions.txt"), marked=listed("upstream_marked.txt"))


def listed_items() -> list[str]:
    return [line for line in (HERE / "collected.txt").read_text().splitlines() if line.strip()]


def main(argv: list[str]) -> int:
    with tempfile.TemporaryDirectory(prefix="ipcluster-compat-") as scratch:
        result = run(Path(scratch), argv)
    differences = listed("differences.txt")
    print(result.report(differences))
    if "-v" in argv:
        for item, text in result.errors.items():
            print(f"\n=== {item}\n{text}")
    (Path(tempfile.gettempdir()) / "ipcluster-compat-last.json").write_text(json.dumps(
        {"outcomes": result.outcomes, "errors": result.errors, "failed": result.failed}))
    return 0 if set(result.failed) <= set(differences) | set(listed("pending.txt")) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
