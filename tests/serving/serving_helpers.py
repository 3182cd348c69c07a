"""Helpers of the export / serving tests (installed scripts, a real photograph, tiny model settings)."""
import os
import pathlib
import subprocess
import sys

import numpy as np

BIN = pathlib.Path(sys.executable).parent
TINY = {"depth": 4, "base_filters": 8, "radius": 4}


def script(name, *args, timeout=120, **kwargs):
    """Run an installed console script of the venv; returns the CompletedProcess (text mode)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run([str(BIN / name), *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env=env, **kwargs)


def last_line(text):
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def photo(size):
    """A real photograph (scikit-image's astronaut) resized to size = (H, W), float32 [0, 1]."""
    import cv2
    import skimage.data

    h, w = size
    return cv2.resize(skimage.data.astronaut(), (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
