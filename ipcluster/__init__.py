"""ipcluster: interactive parallel computing for Python.

    import ipcluster as ipp
    with ipp.Cluster(n=4) as rc:
        rc[:].apply_sync(os.getpid)
"""

import importlib
import sys
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, FIRST_EXCEPTION

from ipcluster import errors as error  # ipyparallel's ``ipp.error``: ipcluster.errors itself

sys.modules[f"{__name__}.error"] = error  # so that `import ipcluster.error` finds it too

# Each public name and the module it lives in, imported on first use (PEP 562), so that an engine,
# which imports `ipcluster.engine`, does not pay for the client API it never uses.
_ERRORS = ["AlreadyDisplayedError", "InvalidDependency", "ClientClosed", "CompositeError", "ConnectionFileError", "ControllerLost",
           "EngineError", "ImpossibleDependency", "IpclusterError", "NoEnginesRegistered",
           "NoSuchEngine", "RemoteError", "SerializationError", "TaskAborted", "TaskTimeout",
           "TimeoutError", "UnmetDependency"]
_HOMES = {
    "AsyncResult": "asyncresult", "AsyncMapResult": "asyncresult",
    "AsyncHubResult": "asyncresult", "Client": "client", "Cluster": "cluster",
    "ClusterManager": "clustermanager",
    "Dependency": "dependency", "Reference": "namespace", "ViewExecutor": "executor",
    "depend": "remotefunction", "interactive": "remotefunction", "require": "remotefunction",
    "remote": "remotefunction", "parallel": "remotefunction",
    "LoadBalancedView": "balanced", "BroadcastView": "views", "DirectView": "views",
    **{name: "errors" for name in _ERRORS},
}


def __getattr__(name: str):
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'ipcluster' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"ipcluster.{home}"), name)
    globals()[name] = value  # once: later lookups do not come here
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOMES))


__version__ = "0.1.0"


def register_joblib_backend(name: str = "ipcluster", make_default: bool = False) -> None:
    """``with joblib.parallel_config("ipcluster"):`` runs ``joblib.Parallel`` on the engines
    (`ipcluster.joblib_backend`, which imports joblib only then)."""
    from ipcluster import joblib_backend

    joblib_backend.register(name, make_default)


def load_ipython_extension(ip) -> None:
    """``%load_ext ipcluster``: the %px magics (`ipcluster.magics`), imported only then."""
    from ipcluster import magics

    magics.load_ipython_extension(ip)


__all__ = [
    "ALL_COMPLETED",
    "AlreadyDisplayedError",
    "AsyncHubResult",
    "AsyncMapResult",
    "AsyncResult",
    "BroadcastView",
    "Client",
    "ClientClosed",
    "Cluster",
    "ClusterManager",
    "CompositeError",
    "ConnectionFileError",
    "ControllerLost",
    "Dependency",
    "DirectView",
    "EngineError",
    "FIRST_COMPLETED",
    "FIRST_EXCEPTION",
    "ImpossibleDependency",
    "InvalidDependency",
    "IpclusterError",
    "LoadBalancedView",
    "NoEnginesRegistered",
    "NoSuchEngine",
    "Reference",
    "RemoteError",
    "SerializationError",
    "TaskAborted",
    "TaskTimeout",
    "TimeoutError",
    "UnmetDependency",
    "ViewExecutor",
    "depend",
    "error",
    "interactive",
    "parallel",
    "register_joblib_backend",
    "remote",
    "require",
]
