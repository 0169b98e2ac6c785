"""Settings of the test process, inherited by the CLI processes the tests start."""

from __future__ import annotations

import os
import sys

import pytest

# One OpenMP/MKL thread per process. CI has 2 cores and some tests run up to eight CLI processes at
# once; each process's torch and scikit-learn pools defaulting to every core only adds contention
# (scikit-learn's trees under torch's OpenMP pool were the slowest test in CI for that reason).
# Set before torch or scikit-learn load (this file is read before any test module is imported).
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
_THREADS = int(os.environ["OMP_NUM_THREADS"])
if "torch" in sys.modules:  # a plugin loaded it first: its pool size was fixed at import
    sys.modules["torch"].set_num_threads(_THREADS)


@pytest.fixture(autouse=True)
def _torch_threads_as_set_here():
    """Put torch's pool back after each test, whatever a test set it to: a later test comparing
    in-process training with a CLI subprocess's (bit for bit) would otherwise compare two thread
    counts. (An in-process sweep trial restores it itself: arflare.sweeping._torch_threads.)"""
    yield
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(_THREADS)
