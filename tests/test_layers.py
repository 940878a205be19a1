"""The layering of ARCHITECTURE.md: no module imports a layer above it; only transport.py
imports zmq; ipcluster.launchers (the repository's launchers/ folder) imports nothing else of
ipcluster."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

LAYERS = [  # lowest first
    {"ipcluster.launchers"},  # the repository's launchers/ folder
    {"ipcluster.config", "ipcluster.errors", "ipcluster.command"},
    {"ipcluster.transport", "ipcluster.wire"},
    {"ipcluster.protocol", "ipcluster.batch", "ipcluster.guard", "ipcluster.serialize", "ipcluster.connection", "ipcluster.shm", "ipcluster.direct", "ipcluster.namespace",
     "ipcluster.fingerprint", "ipcluster.state"},
    {"ipcluster.controller", "ipcluster.engine", "ipcluster.datapub"},
    {"ipcluster.daskbridge", "ipcluster.joblib_backend",
     "ipcluster.asyncresult", "ipcluster.task", "ipcluster.records", "ipcluster.submission", "ipcluster.remotefunction", "ipcluster.views", "ipcluster.balanced", "ipcluster.client",
     "ipcluster.cluster", "ipcluster.engineset", "ipcluster.clustermanager", "ipcluster.blocking",
     "ipcluster.controllerprocess", "ipcluster.executor", "ipcluster.session", "ipcluster.sender", "ipcluster.receiver", "ipcluster.links", "ipcluster.partition",
     "ipcluster.imports", "ipcluster.dependency", "ipcluster.supervisor", "ipcluster.output",
     "ipcluster.progress", "ipcluster.dashboard.link",
     "ipcluster.display", "ipcluster.provenance"},
    {"ipcluster.magics", "ipcluster.celloutput", "ipcluster.cli", "ipcluster.report", "ipcluster.teardown", "ipcluster.__main__", "ipcluster",
     "ipcluster.dashboard"},  # the dashboard process (its link module is in the layer below)
]


def layer_of(module: str) -> int:
    for depth in (module, module.rsplit(".", 1)[0], ".".join(module.split(".")[:2])):
        for i, layer in enumerate(LAYERS):
            if depth in layer:
                return i
    raise AssertionError(f"{module} is in no layer; add it to LAYERS in tests/test_layers.py")


def modules(package: str):
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        yield name, path


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


def test_no_module_imports_a_layer_above_it():
    wrong = []
    for name, path in modules("ipcluster"):
        mine = layer_of(name)
        for imported in imports(path):
            if imported.startswith("ipcluster") and imported != "ipcluster":
                target = imported
                while (target not in {n for n, _ in modules("ipcluster")} and "." in target
                       and not target.startswith("ipcluster.launchers")):
                    target = target.rsplit(".", 1)[0]
                if layer_of(target) > mine:
                    wrong.append(f"{name} imports {imported}")
    assert not wrong, wrong


def test_controller_and_engine_do_not_import_each_other():
    for side, other in (("controller", "engine"), ("engine", "controller")):
        for name, path in modules(f"ipcluster/{side}"):
            assert not any(i.startswith(f"ipcluster.{other}") for i in imports(path)), name


def test_only_transport_imports_zmq():
    users = {name for name, path in modules("ipcluster")
             if any(i == "zmq" or i.startswith("zmq.") for i in imports(path))}
    assert users == {"ipcluster.transport"}


def test_launchers_import_nothing_else_of_ipcluster():
    for name, path in modules("launchers"):
        outside = [i for i in imports(path)
                   if i.startswith("ipcluster") and not i.startswith("ipcluster.launchers")
                   and i != "ipcluster"]
        assert not outside, (name, outside)
