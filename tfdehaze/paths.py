"""Where tfdehaze keeps files it makes itself: the bundled sample set and converted weights.

``$TFDEHAZE_HOME`` if set, else ``~/.cache/tfdehaze``. Nothing here is downloaded.
"""
import os
import pathlib


def home() -> pathlib.Path:
    """The tfdehaze cache folder (created on first use)."""
    root = os.environ.get("TFDEHAZE_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "tfdehaze")
    path = pathlib.Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def weights_dir() -> pathlib.Path:
    """Folder of converted pretrained weights, e.g. ``minet_official_its.weights.h5``."""
    path = home() / "weights"
    path.mkdir(parents=True, exist_ok=True)
    return path
