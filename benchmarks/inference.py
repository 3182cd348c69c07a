"""Inference latency at 512x512 (batch 1, CPU) of every registered model and of the dark-channel-prior baseline.

    python benchmarks/inference.py [--size 512] [--repeats 5] [--only NAME ...]

Iterates over `tfdehaze.models.registry.names()` at run time, so models added later are timed too. Each name is
``registry.load``-ed (released weights where it has them, e.g. ``minet-official`` after
``data_prep/convert_minet.py``), else built with random weights (same latency). Each model runs compiled
(`tf.function`); the first call (tracing) is excluded, the table gives the median and min of ``--repeats`` calls.
The machine is shared: expect noise.

    python benchmarks/inference.py --memory [--size 2048] [--tile 512] [--only dcp rfd]

prints, per model, the peak resident memory of dehazing one ``--size`` image whole and tiled
(`tfdehaze.inference.make_dehazer(tile=...)`, ``--overlap`` 128); each figure is measured in a fresh subprocess
(``ru_maxrss``), next to the memory after loading the model (TensorFlow itself, before any image).

``--quick`` prints both tables in seconds (checks that the script runs; the figures mean nothing): latency of
``dcp`` and ``rfd`` at 32 px, one call each, then the memory of ``dcp`` on a 96 px image, tiles of 64, overlap 16.
"""
import argparse
import os
import statistics
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import _common  # noqa: E402  benchmarks/_common.py
import tensorflow as tf  # noqa: E402


def _time(fn, x, repeats):
    times = _common.timed(lambda: tf.nest.map_structure(lambda t: t.numpy(), fn(x)), repeats)
    return statistics.median(times), min(times)


def candidates():
    """(name, callable (1, H, W, 3) -> outputs, parameter count or None, note) for what is importable."""
    from tfdehaze import physics

    yield "dcp (physics.dcp_dehaze)", tf.function(physics.dcp_dehaze), None, "no weights"
    try:
        from tfdehaze.models import registry
    except ImportError as err:
        print(f"(registry not importable: {err})")
        return
    for name in registry.names():
        try:
            with warnings.catch_warnings(record=True) as caught:    # the registry warns for random weights
                warnings.simplefilter("always")
                model = registry.load(name)
            note = "random weights" if caught else "released weights"
        except (FileNotFoundError, ValueError, OSError):
            model, note = registry.build(name), "random weights (released ones not converted)"
        yield name, tf.function(lambda x, m=model: m(x, training=False)), model, note


def _memory_child(name, size, tile, overlap):
    """In a fresh process: load, dehaze one image, print 'base_mb peak_mb seconds'."""
    import resource

    import numpy as np

    from tfdehaze.inference import make_dehazer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dehazer = make_dehazer("dcp", tile=tile or None, overlap=overlap) if name == "dcp" else make_dehazer(
            model=name, tile=tile or None, overlap=overlap)
    x = tf.random.uniform([1, size, size, 3], seed=0)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    np.asarray(dehazer(x)["dehazed"])
    seconds = time.perf_counter() - start
    print(base, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, seconds)


def memory_table(names, size, tile, overlap=128):
    import subprocess
    import sys

    print(f"peak resident memory, one {size}x{size} image, whole vs tiled (tile {tile}, overlap {overlap}), "
          f"{os.cpu_count()} CPU cores (shared machine)")
    print(f"{'model':<16} {'after load MB':>13} {'whole MB':>9} {'whole s':>8} {'tiled MB':>9} {'tiled s':>8}")
    for name in names:
        cells = []
        for t in (0, tile):
            proc = subprocess.run([sys.executable, __file__, "--_child", name, str(size), str(t), str(overlap)],
                                  capture_output=True, text=True)
            try:
                base, peak, seconds = map(float, proc.stdout.split()[-3:])
                cells.append((base, peak, seconds))
            except ValueError:
                cells.append(None)
        text = [f"{c[1]:>9.0f} {c[2]:>8.1f}" if c else f"{'failed':>9} {'':>8}" for c in cells]
        base = next((c[0] for c in cells if c), float("nan"))
        print(f"{name:<16} {base:>13.0f} {text[0]} {text[1]}", flush=True)


def main():
    import sys

    if len(sys.argv) == 6 and sys.argv[1] == "--_child":
        warnings.simplefilter("ignore")
        _memory_child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--memory", action="store_true", help="peak memory whole vs tiled (default size 2048)")
    p.add_argument("--tile", type=int, default=512)
    p.add_argument("--overlap", type=int, default=128)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--only", nargs="+", help="names to time (default: all)")
    p.add_argument("--quick", action="store_true", help="both tables, tiny sizes, one call: checks the script runs")
    args = p.parse_args()
    if args.quick:
        args.size, args.repeats, args.only = 32, 1, args.only or ["dcp", "rfd"]
    elif args.memory:
        size = args.size if args.size != 512 else 2048
        memory_table(args.only or ["dcp", "rfd", "minet-official"], size, args.tile, args.overlap)
        return
    x = tf.random.uniform([1, args.size, args.size, 3], seed=0)
    print(f"latency at {args.size}x{args.size}, batch 1, {os.cpu_count()} CPU cores (shared machine), "
          f"median/min of {args.repeats} compiled calls")
    print(f"{'model':<28} {'params':>10} {'median ms':>10} {'min ms':>8}  note")
    for name, fn, model, note in candidates():
        if args.only and not any(name.startswith(o) for o in args.only):
            continue
        try:
            median, best = _time(fn, x, args.repeats)
        except Exception as err:  # a benchmark row, not a test: report and go on
            print(f"{name:<28} failed: {type(err).__name__}: {str(err)[:80]}")
            continue
        params = f"{model.count_params():,}" if model is not None else "-"
        print(f"{name:<28} {params:>10} {median * 1e3:>10.0f} {best * 1e3:>8.0f}  {note}", flush=True)
    if args.quick:
        print()
        memory_table(["dcp"], 96, 64, 16)


if __name__ == "__main__":
    main()
