"""Shared fixtures; tests/tiny.py has the tiny model and tokenizer builders.

Every test runs under `knowpack.devices.device_guard()` (a tensor made without `device=` that
meets the model's fails, as it would on a GPU) unless it is marked `no_device_guard`, and the whole
suite runs torch on one thread (tiny matrices: one thread is fastest, and OpenMP threads spin-wait on
each other when other work holds the cores; `make test` also sets OMP_NUM_THREADS=1 for the
processes tests start). `KNOWPACK_DEVICE_GUARD=0` runs the suite without the guard.
"""

from __future__ import annotations

import os

import pytest
import torch

from knowpack.devices import device_guard

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _device_guard(request):
    if request.node.get_closest_marker("no_device_guard") or os.environ.get("KNOWPACK_DEVICE_GUARD") == "0":
        yield
        return
    with device_guard():
        yield


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module's tests (the suite already runs on one; kept for modules that say so)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The training tests' world (tests/helpers.py): facts file, finished probe run, tiny checkpoints."""
    from helpers import build_train_world

    return build_train_world(tmp_path_factory.mktemp("world"))


@pytest.fixture
def fake_base(tmp_path):
    """A run config whose probe run is hand-made (tests/helpers.py: `build_fake_base`); no model loads."""
    from helpers import build_fake_base

    return build_fake_base(tmp_path)
