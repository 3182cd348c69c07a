"""Inference latency at 512x512 (batch 1, CPU) of every registered model and of the dark-channel-prior baseline.

    python benchmarks/inference.py [--size 512] [--repeats 5] [--only NAME ...]

Iterates over `tfdehaze.models.registry.names()` at run time, so models added later are timed too. Each name is
``registry.load``-ed (released weights where it has them, e.g. ``minet-official`` after
``data_prep/convert_minet.py``), else built with random weights (same latency). Each model runs compiled
(`tf.function`); the first call (tracing) is excluded, the table gives the median and min of ``--repeats`` calls.
The machine is shared: expect noise.
"""
import argparse
import os
import statistics
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf  # noqa: E402


def _time(fn, x, repeats):
    fn(x)                                     # trace / warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn(x)
        tf.nest.map_structure(lambda t: t.numpy(), out)
        times.append(time.perf_counter() - start)
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


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--only", nargs="+", help="names to time (default: all)")
    args = p.parse_args()
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


if __name__ == "__main__":
    main()
