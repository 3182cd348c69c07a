"""What every benchmark times the same way (not a benchmark: ``tests/test_benchmarks.py`` skips ``_*.py``)."""
import time


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
