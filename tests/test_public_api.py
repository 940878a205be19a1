"""The public names users type; changing them is a decision, not an accident."""

import ipcluster

PUBLIC = [
    "ALL_COMPLETED", "AlreadyDisplayedError", "AsyncHubResult", "AsyncMapResult", "FIRST_COMPLETED",
    "FIRST_EXCEPTION", "InvalidDependency", "error", "parallel", "remote",
    "AsyncResult", "BroadcastView", "Client", "ClientClosed", "Cluster", "ClusterManager",
    "CompositeError",
    "ConnectionFileError", "ControllerLost", "Dependency", "DirectView", "EngineError",
    "ImpossibleDependency",
    "IpclusterError", "LoadBalancedView", "NoEnginesRegistered", "NoSuchEngine", "Reference",
    "RemoteError", "SerializationError", "TaskAborted", "TaskTimeout", "TimeoutError",
    "UnmetDependency", "ViewExecutor", "depend", "interactive", "register_joblib_backend",
    "require",
]


def test_all_is_pinned():
    assert sorted(ipcluster.__all__) == sorted(PUBLIC)
    for name in PUBLIC:
        assert getattr(ipcluster, name) is not None


def test_errors_are_catchable_as_ipcluster_errors():
    for name in PUBLIC:
        obj = getattr(ipcluster, name)
        if isinstance(obj, type) and issubclass(obj, BaseException) and name != "TimeoutError":
            assert issubclass(obj, ipcluster.IpclusterError), name


def test_client_and_view_methods_users_call():
    for name in ["ids", "load_balanced_view", "direct_view", "wait_for_engines", "close"]:
        assert hasattr(ipcluster.Client, name)
    for name in ["apply", "apply_async", "apply_sync", "map", "map_async", "map_sync", "push",
                 "pull", "execute"]:
        assert hasattr(ipcluster.DirectView, name)
    for name in ["start_cluster_sync", "start_and_connect_sync", "stop_cluster_sync",
                 "start_cluster", "start_and_connect", "stop_cluster"]:
        assert hasattr(ipcluster.Cluster, name)
    for name in ["get", "wait", "ready", "successful", "msg_ids", "stdout", "stderr",
                 "metadata", "engine_id", "result", "add_done_callback"]:
        assert hasattr(ipcluster.AsyncResult, name)
