"""ipcluster: interactive parallel computing for Python.

    import ipcluster as ipp
    with ipp.Cluster(n=4) as rc:
        rc[:].apply_sync(os.getpid)
"""

from ipcluster.asyncresult import AsyncResult
from ipcluster.client import Client
from ipcluster.cluster import Cluster
from ipcluster.errors import (
    ClientClosed,
    CompositeError,
    ConnectionFileError,
    ControllerLost,
    EngineError,
    IpclusterError,
    NoEnginesRegistered,
    NoSuchEngine,
    RemoteError,
    SerializationError,
    TimeoutError,
)
from ipcluster.remotefunction import interactive
from ipcluster.views import DirectView, LoadBalancedView

__version__ = "0.1.0"

__all__ = [
    "AsyncResult",
    "Client",
    "ClientClosed",
    "Cluster",
    "CompositeError",
    "ConnectionFileError",
    "ControllerLost",
    "DirectView",
    "EngineError",
    "IpclusterError",
    "LoadBalancedView",
    "NoEnginesRegistered",
    "NoSuchEngine",
    "RemoteError",
    "SerializationError",
    "TimeoutError",
    "interactive",
]
