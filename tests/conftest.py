"""Shared fixtures: the real reference data beside the repo (skipped when absent) and small random images."""
import os
import pathlib
import sys

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))  # `import harness` from any test file

REFERENCE = pathlib.Path(os.environ.get(
    "TFDEHAZE_REFERENCE", pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "reference"))


@pytest.fixture(scope="session")
def reference_dir():
    """`../shared/reference/` (real photographs, SOTS pairs, MI-Net weights); the test skips where it is absent."""
    if not REFERENCE.is_dir():
        pytest.skip(f"reference data not found at {REFERENCE}")
    return REFERENCE


@pytest.fixture
def rng():
    return np.random.default_rng(0)
