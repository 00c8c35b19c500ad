"""Shared test setup: tiny networks run fastest, and most fairly, on one thread."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def one_thread():
    """Run every test with one torch thread (restored afterwards), when torch is loaded."""
    import sys

    torch = sys.modules.get("torch")
    if torch is None:  # tests that never import torch (the spline path) stay torch-free
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def no_real_heads(monkeypatch, tmp_path_factory):
    """Exports in tests skip the real validation heads (minutes of whole-head inference); the tests of
    :mod:`mrisr.training.real_heads` pass the real folder explicitly."""
    monkeypatch.setenv("MRISR_VALIDATION_DATA", str(tmp_path_factory.getbasetemp() / "no-real-heads"))
