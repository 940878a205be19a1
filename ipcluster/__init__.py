"""ipcluster: interactive parallel computing for Python.

    import ipcluster as ipp
    with ipp.Cluster(n=4) as rc:
        rc[:].apply_sync(os.getpid)
"""

from ipcluster.asyncresult import AsyncResult
from ipcluster.client import Client
from ipcluster.cluster import Cluster
from ipcluster.dependency import Dependency
from ipcluster.namespace import Reference
from ipcluster.errors import (
    ClientClosed,
    CompositeError,
    ConnectionFileError,
    ControllerLost,
    EngineError,
    ImpossibleDependency,
    IpclusterError,
    NoEnginesRegistered,
    NoSuchEngine,
    RemoteError,
    SerializationError,
    TaskAborted,
    TaskTimeout,
    TimeoutError,
    UnmetDependency,
)
from ipcluster.executor import ViewExecutor
from ipcluster.remotefunction import depend, interactive, require
from ipcluster.balanced import LoadBalancedView
from ipcluster.views import BroadcastView, DirectView

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
    "AsyncResult",
    "BroadcastView",
    "Client",
    "ClientClosed",
    "Cluster",
    "CompositeError",
    "ConnectionFileError",
    "ControllerLost",
    "Dependency",
    "DirectView",
    "EngineError",
    "ImpossibleDependency",
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
    "interactive",
    "register_joblib_backend",
    "require",
]
