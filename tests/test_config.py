"""Options resolve from arguments, then dask.config, then defaults; unknown keys are errors."""

from __future__ import annotations

import dask.config
import pytest

from ipcluster.config import resolve
from ipcluster.controller.main import ControllerOptions


def test_defaults_then_config_then_arguments():
    assert resolve(ControllerOptions, "controller").hwm == 32
    with dask.config.set({"ipcluster.controller.hwm": 5, "ipcluster.controller.engine-timeout": 9}):
        options = resolve(ControllerOptions, "controller")
        assert (options.hwm, options.engine_timeout) == (5, 9)
        assert resolve(ControllerOptions, "controller", {"hwm": 1}).hwm == 1


def test_environment_variables_reach_the_options(monkeypatch):
    monkeypatch.setenv("DASK_IPCLUSTER__CONTROLLER__IP", "127.0.0.2")
    dask.config.refresh()
    try:
        assert resolve(ControllerOptions, "controller").ip == "127.0.0.2"
    finally:
        monkeypatch.delenv("DASK_IPCLUSTER__CONTROLLER__IP")
        dask.config.refresh()


def test_unknown_keys_list_the_valid_ones_with_defaults():
    with pytest.raises(TypeError, match=r"unknown controller option\(s\) 'hmw'.*hwm=32"):
        resolve(ControllerOptions, "controller", {"hmw": 3})
    with dask.config.set({"ipcluster.controller.bogus": 1}):
        with pytest.raises(TypeError, match="configured ipcluster.controller.*'bogus'"):
            resolve(ControllerOptions, "controller")
