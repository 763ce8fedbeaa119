"""Shared fixtures; tests/tiny.py has the tiny model and tokenizer builders."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Tiny matrices: one thread is fastest, and much faster when other work holds the cores (OpenMP threads
    spin-wait on each other). Use with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
