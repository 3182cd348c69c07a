"""What several benchmarks do the same way: timing calls, writing test images (not a benchmark:
``tests/test_benchmarks.py`` skips ``_*.py``)."""
import pathlib
import time

import numpy as np


def timed(fn, repeats, warmup=1):
    """Wall seconds of each of ``repeats`` calls of ``fn()``, after ``warmup`` untimed calls (tracing, caches).

    ``fn`` must wait for its result (``.numpy()``, ``float(...)``): TensorFlow returns before the work is done.
    """
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def write_pairs(root, count, h, w):
    """``count`` synthetic hazy/clear PNG pairs of ``h`` x ``w`` in ``root/hazy`` and ``root/clear`` (same names):
    smooth ramps with noise, so PNG decoding costs what it costs on photographs. Returns the two folders."""
    from tfdehaze.data import io

    root = pathlib.Path(root)
    rng = np.random.default_rng(0)
    ramp = np.linspace(0.0, 1.0, w)[None, :, None] * np.linspace(0.3, 1.0, h)[:, None, None]
    for i in range(count):
        clear = np.clip(ramp * rng.uniform(0.5, 1.0, 3) + rng.normal(0.0, 0.05, (h, w, 3)), 0.0, 1.0)
        io.write_image(root / "clear" / f"{i:02d}.png", clear)
        io.write_image(root / "hazy" / f"{i:02d}.png", 0.6 * clear + 0.35)
    return root / "hazy", root / "clear"
