import os

import pytest
import torch

from bayesprior.plugins import register_plugin, reset_plugins, unregister_plugin

from _dwp_tiny import TINY_NAME as TINY_DWP_NAME
from _dwp_tiny import TinyPlugin as TinyDwpPlugin
from training_fixtures import TINY, TinyArchitecturePlugin

# keep the suite fast and deterministic on 2 cores
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def fresh_plugins():
    """Plugins loaded afresh from the entry points before the test, and forgotten after it."""
    reset_plugins()
    yield
    reset_plugins()


@pytest.fixture
def tiny_architecture():
    """The two-level 3D test network of `training_fixtures`, registered for the test; yields its name."""
    register_plugin(TinyArchitecturePlugin(), "tiny-test-architecture")
    yield TINY
    unregister_plugin("tiny-test-architecture")


@pytest.fixture
def tiny_dwp_architecture():
    """The grouped test network of `_dwp_tiny` (kernel banks, DWP), registered for the test; yields its name."""
    register_plugin(TinyDwpPlugin(), "tiny-dwp-test")
    yield TINY_DWP_NAME
    unregister_plugin("tiny-dwp-test")
