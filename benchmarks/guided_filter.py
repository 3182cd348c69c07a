"""GuidedFilter speed and memory against OpenCV's C++ guided filter (cv2.ximgproc.guidedFilter).

Prints, for 512² and 2048² (1-channel float32 guide and x, batch 1) and r = 2, 8, 60, 120:
- forward time of ``guided_filter`` (inside ``tf.function``; default ``jit_compile=True``), of the same without XLA
  (``jit_compile=False``) and of OpenCV;
- backward time = (forward + backward) − forward, for the custom gradient and for ``tf.GradientTape`` autodiff of the
  very same forward without the custom gradient (``custom_gradient=False``);
- peak memory: in a fresh subprocess per configuration (r = 60), after imports and inputs, the peak-RSS mark is reset
  (/proc/self/clear_refs) and the configuration runs twice; the table shows peak RSS (VmHWM) minus the RSS before.
  It includes XLA compilation and TensorFlow's allocator caching: read it as "extra memory the process needed", not
  as tensor bytes. Linux only (``ru_maxrss`` would not do: a child inherits its parent's).

Times are the minimum over repeats (wall clock; configurations interleaved round-robin, after a first round that
also compiles). Run by hand:
    python benchmarks/guided_filter.py            # about 3-4 minutes on 2 cores
    python benchmarks/guided_filter.py --quick    # 512² only, no memory table
"""
import argparse
import pathlib
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # run from a checkout without installing

EPS = 1e-4
RADII = (2, 8, 60, 120)


def inputs(size):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size] / size
    guide = 0.5 + 0.3 * np.sin(9 * xx) * np.cos(7 * yy) + 0.05 * rng.standard_normal((size, size))
    x = 0.6 + 0.2 * np.cos(5 * xx + 3 * yy) + 0.1 * rng.standard_normal((size, size))
    return [np.clip(a, 0, 1).astype(np.float32)[None, ..., None] for a in (guide, x)]


def variants(radius):
    import tensorflow as tf

    from tfdehaze.layers.guided_filter import guided_filter

    def autodiff_forward(g, x):
        return guided_filter(g, x, radius, EPS, custom_gradient=False)

    def fwd_bwd(fn):
        def run(g, x):
            with tf.GradientTape() as tape:
                tape.watch([g, x])
                y = fn(g, x)
            return tape.gradient(y, [g, x], output_gradients=tf.ones_like(y))
        return tf.function(run)

    return {
        "forward": tf.function(lambda g, x: guided_filter(g, x, radius, EPS)),
        "no_xla": tf.function(lambda g, x: guided_filter(g, x, radius, EPS, jit_compile=False)),
        "custom": fwd_bwd(lambda g, x: guided_filter(g, x, radius, EPS)),
        "autodiff": fwd_bwd(autodiff_forward),
    }


def opencv(radius):
    import cv2

    return lambda g, x: cv2.ximgproc.guidedFilter(g[0, ..., 0], x[0, ..., 0], radius, EPS)


def sync(out):
    """Wait for the result (a tensor, an array or a list of gradients)."""
    return np.asarray(out[0] if isinstance(out, (list, tuple)) else out)


def best_times(fns, repeats):
    """Min wall time (ms) of each function; calls interleaved round-robin so a burst of other load hits all alike."""
    times = {key: [] for key in fns}
    for _ in range(repeats + 1):  # the first round compiles
        for key, (fn, fn_args) in fns.items():
            start = time.perf_counter()
            sync(fn(*fn_args))
            times[key].append(time.perf_counter() - start)
    return {key: 1e3 * min(t[1:]) for key, t in times.items()}


def memory_child(size, variant):
    """Runs in a fresh subprocess: peak RSS growth (MB) while running one configuration twice (Linux)."""
    import tensorflow as tf

    g, x = inputs(size)
    fn = opencv(60) if variant == "opencv" else variants(60)[variant]
    if variant != "opencv":
        g, x = tf.constant(g), tf.constant(x)
    status = pathlib.Path("/proc/self/status")
    pathlib.Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
    before = int(status.read_text().split("VmRSS:")[1].split()[0])
    for _ in range(2):
        sync(fn(g, x))
    print((int(status.read_text().split("VmHWM:")[1].split()[0]) - before) / 1024)


def peak_mb(size, variant):
    out = subprocess.run([sys.executable, __file__, "--memory", str(size), variant], capture_output=True, text=True,
                         check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main(quick):
    import tensorflow as tf

    print(f"TensorFlow {tf.__version__}; 1-channel float32 guide and x, batch 1, eps={EPS}; times in ms (min)")
    header = (f"{'size':>5} {'r':>4} | {'fwd':>7} {'OpenCV':>7} {'ratio':>5} {'no XLA':>7} | {'bwd custom':>10}"
              f" {'bwd autodiff':>12} | {'fwd+bwd custom':>14} {'fwd+bwd autodiff':>16}")
    print(header)
    print("-" * len(header))
    for size in (512,) if quick else (512, 2048):
        g, x = inputs(size)
        gt, xt = tf.constant(g), tf.constant(x)
        fns = {}
        for r in RADII:
            fns.update({(r, k): (fn, (gt, xt)) for k, fn in variants(r).items()})
            fns[r, "opencv"] = (opencv(r), (g, x))
        fast = {key: value for key, value in fns.items() if key[1] in ("forward", "opencv", "no_xla")}
        t = best_times(fast, 12 if size <= 512 else 5)
        t.update(best_times({k: v for k, v in fns.items() if k not in fast}, 6 if size <= 512 else 3))
        for r in RADII:
            fwd, ocv, custom, auto = t[r, "forward"], t[r, "opencv"], t[r, "custom"], t[r, "autodiff"]
            print(f"{size:>5} {r:>4} | {fwd:7.1f} {ocv:7.1f} {fwd / ocv:5.2f} {t[r, 'no_xla']:7.1f} | "
                  f"{custom - fwd:10.1f}"
                  f" {auto - fwd:12.1f} | {custom:14.1f} {auto:16.1f}", flush=True)
        print(f"{size:>5} forward r=120 / r=2: {t[120, 'forward'] / t[2, 'forward']:.2f}")
    if quick:
        return
    print("\nPeak memory, r = 60: growth of the peak RSS of a fresh process while it runs the configuration twice "
          "(compilation included), MB")
    for size in (512, 2048):
        row = {v: peak_mb(size, v) for v in ("forward", "custom", "autodiff", "opencv")}
        print(f"{size:>5}: forward {row['forward']:6.0f} | fwd+bwd custom {row['custom']:6.0f}"
              f" | fwd+bwd autodiff {row['autodiff']:6.0f} | OpenCV {row['opencv']:6.0f}", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="512² only, no memory table")
    parser.add_argument("--memory", nargs=2, metavar=("SIZE", "VARIANT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory:
        memory_child(int(args.memory[0]), args.memory[1])
    else:
        main(args.quick)
