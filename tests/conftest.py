"""Shared fixtures: the real reference data beside the repo (skipped when absent) and small random images."""
import os
import pathlib
import sys

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# One cache of the guided filter's compiled C++ kernel for the session and its subprocesses, also for the tests
# that point TFDEHAZE_HOME at a temporary folder (each would compile it again, ~15 s).
os.environ.setdefault("TFDEHAZE_NATIVE_DIR", str(pathlib.Path(
    os.environ.get("TFDEHAZE_HOME") or pathlib.Path.home() / ".cache" / "tfdehaze") / "native"))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))  # `import harness` from any test file

REFERENCE = pathlib.Path(os.environ.get(
    "TFDEHAZE_REFERENCE", pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "reference"))


#: What the tests read from the reference folder (its README says where each comes from).
REFERENCE_CONTENTS = ("hazy_flower.jpg", "minet_official_its.pth", "sots_indoor_sample/hazy/*.png",
                      "sots_indoor_sample/clear/*.png")
HOW_TO_PROVIDE = ("to run these tests, put hazy_flower.jpg (a real hazy photograph), minet_official_its.pth (the "
                  "MI-Net authors' released RESIDE-ITS weights) and sots_indoor_sample/hazy/NNNN_k.png + "
                  "sots_indoor_sample/clear/NNNN.png (RESIDE SOTS-indoor pairs) into ../shared/reference/ beside "
                  "the repository, or set TFDEHAZE_REFERENCE to a folder holding them")


def missing_reference(root: pathlib.Path) -> list[str]:
    """The entries of `REFERENCE_CONTENTS` that ``root`` lacks (all of them when it is not a folder)."""
    if not root.is_dir():
        return list(REFERENCE_CONTENTS)
    return [name for name in REFERENCE_CONTENTS if not any(root.glob(name))]


@pytest.fixture(scope="session")
def reference_dir():
    """`../shared/reference/` or $TFDEHAZE_REFERENCE (real photographs, SOTS pairs, MI-Net weights); the test skips,
    saying how to provide them, unless every entry of `REFERENCE_CONTENTS` is there."""
    missing = missing_reference(REFERENCE)
    if missing:
        what = "not found" if not REFERENCE.is_dir() else f"lacks {', '.join(missing)}"
        pytest.skip(f"reference data {REFERENCE} {what}; {HOW_TO_PROVIDE}")
    return REFERENCE


@pytest.fixture
def rng():
    return np.random.default_rng(0)
