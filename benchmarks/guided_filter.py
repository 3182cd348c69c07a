"""GuidedFilter speed and memory against OpenCV's C++ guided filter, the rows of issue 16's table.

Each row is printed for both paths of ``guided_filter`` (``--path both``, the default): "native", the C++ kernel
(`tfdehaze.layers.native`, what runs on CPU in float32), and "XLA", the pure TensorFlow path (traced under
``guided_filter.portable()``, default ``jit_compile=True``: what runs on GPU, for float64 and in exported models).
``--path native`` or ``--path xla`` prints one. For a 1-channel float32 guide and x (batch 1, eps = 1e-4, r = 60):
- forward time of ``guided_filter`` (inside ``tf.function``) and of OpenCV's ``cv2.ximgproc.guidedFilter`` at 512²
  and 2048², and their ratio (goal: <= 1.0);
- forward + backward / forward at 2048², with the gradient of x and the guide, and of x alone (the guide a
  constant image, as when Guided-Pix2Pix filters its transmission with the hazy input as guide) (goal: <= 2.0);
- forward peak memory at 2048² against OpenCV (goal: <= 2x). One fresh subprocess per measurement: after imports
  and inputs the peak-RSS mark is reset (/proc/self/clear_refs) and the configuration runs twice; the figure is the
  peak RSS (VmHWM) minus the RSS before. "fresh" includes TensorFlow's first XLA compilation of the process (LLVM
  start-up and the compilation itself); "warm" first runs the same configuration at 64², so it counts the tensors,
  the compilation for this size and allocator caching. Linux only (tracemalloc does not see TensorFlow, and
  ``ru_maxrss`` would not do: a child inherits its parent's);
- the largest difference between float32 and float64 outputs at 2048², r = 8 (goal: <= 3e-5; the float64 reference
  is the TensorFlow path, the only one in float64).

When ``cv2.ximgproc`` is missing (opencv-python without the contrib modules), OpenCV's side is He et al.'s algorithm
written with ``cv2.boxFilter`` (what ximgproc's guided filter does), and the output says so.

Times are medians over interleaved rounds (every configuration once per round, after a first round that also
compiles), wall clock with TensorFlow's and OpenCV's default threads (``--threads 1``: one each, steadier when other
processes share the cores); the load average is printed, since other processes on the cores change the figures.
The full run also prints a table over radii with XLA off and TensorFlow's own autodiff.
Run by hand:
    python benchmarks/guided_filter.py            # about 6 minutes on 2 cores
    python benchmarks/guided_filter.py --threads 1
    python benchmarks/guided_filter.py --path native
    python benchmarks/guided_filter.py --quick    # 64² and 128², r = 8, one round, no warm memory row: a smoke
                                                  # test of this script (about 40 s)
"""
import argparse
import contextlib
import os
import pathlib
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # run from a checkout without installing

EPS = 1e-4


def inputs(size):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size] / size
    guide = 0.5 + 0.3 * np.sin(9 * xx) * np.cos(7 * yy) + 0.05 * rng.standard_normal((size, size))
    x = 0.6 + 0.2 * np.cos(5 * xx + 3 * yy) + 0.1 * rng.standard_normal((size, size))
    return [np.clip(a, 0, 1).astype(np.float32)[None, ..., None] for a in (guide, x)]


PATHS = {"native": "native", "xla": "XLA"}


def variants(radius, path="native", extra=False):
    """tf.functions of one path: forward; forward + backward for x and the guide, for x alone; with extra: no XLA,
    TensorFlow's autodiff. The XLA path is traced under ``portable()`` (its bodies run only while tracing)."""
    import tensorflow as tf

    from tfdehaze.layers.guided_filter import guided_filter, portable

    def scope():
        return portable() if path == "xla" else contextlib.nullcontext()

    def forward(**kwargs):
        def run(g, x):
            with scope():
                return guided_filter(g, x, radius, EPS, **kwargs)
        return tf.function(run)

    def fwd_bwd(watch_guide, **kwargs):
        def run(g, x):
            with scope(), tf.GradientTape() as tape:
                tape.watch([g, x] if watch_guide else [x])
                y = guided_filter(g, x, radius, EPS, **kwargs)
            return tape.gradient(y, [g, x] if watch_guide else [x], output_gradients=tf.ones_like(y))
        return tf.function(run)

    out = {"forward": forward(), "fwd+bwd": fwd_bwd(True), "fwd+bwd x": fwd_bwd(False)}
    if extra:
        out["no XLA"] = forward(jit_compile=False)
        out["autodiff"] = fwd_bwd(True, custom_gradient=False)
    return out


def native_state():
    """'' when the C++ kernel is available (compiling it now if needed), else why not."""
    from tfdehaze.layers import native

    if not native.enabled():
        return "TFDEHAZE_NATIVE=0"
    return "" if native.load() is not None else "it does not compile or load (see the warning above)"


def float32_errors(paths, size, radius):
    """Largest |float32 - float64| of the output of each path on smooth inputs (float64 runs the TensorFlow path)."""
    import tensorflow as tf

    from tfdehaze.layers.guided_filter import guided_filter, portable

    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:size, 0:size] / size
    guide = np.clip(0.5 + 0.3 * np.sin(6 * xx) * np.cos(4 * yy) + 0.15 * (xx > 0.5)
                    + 0.05 * rng.standard_normal((size, size)), 0, 1)[None, ..., None]
    x = np.clip(0.6 + 0.2 * np.cos(5 * xx + 3 * yy) + 0.05 * rng.standard_normal((size, size)), 0, 1)[None, ..., None]
    y64 = guided_filter(tf.constant(guide), tf.constant(x), radius, EPS).numpy()
    errors = {}
    for path in paths:
        with portable() if path == "xla" else contextlib.nullcontext():
            y32 = guided_filter(tf.constant(guide, tf.float32), tf.constant(x, tf.float32), radius, EPS).numpy()
        errors[path] = float(np.abs(y32 - y64).max())
    return errors


def opencv(radius):
    """OpenCV's guided filter (ximgproc) or, without the contrib modules, He et al.'s algorithm on cv2.boxFilter."""
    import cv2

    if hasattr(cv2, "ximgproc"):
        return "cv2.ximgproc.guidedFilter", lambda g, x: cv2.ximgproc.guidedFilter(g[0, ..., 0], x[0, ..., 0],
                                                                                  radius, EPS)

    def guided(g, x):
        g, x = g[0, ..., 0], x[0, ..., 0]

        def mean(m):
            return cv2.boxFilter(m, -1, (2 * radius + 1, 2 * radius + 1), borderType=cv2.BORDER_REFLECT)
        mean_i, mean_x = mean(g), mean(x)
        a = (mean(g * x) - mean_i * mean_x) / (mean(g * g) - mean_i * mean_i + EPS)
        return mean(a) * g + mean(mean_x - a * mean_i)

    return "He et al. on cv2.boxFilter (cv2.ximgproc is not installed)", guided


def sync(out):
    """Wait for the result (a tensor, an array or a list of gradients)."""
    return np.asarray(out[0] if isinstance(out, (list, tuple)) else out)


def median_times(fns, rounds):
    """Median wall time (ms) of each function over interleaved rounds, after a first round that compiles."""
    times = {key: [] for key in fns}
    for _ in range(rounds + 1):
        for key, (fn, fn_args) in fns.items():
            start = time.perf_counter()
            sync(fn(*fn_args))
            times[key].append(time.perf_counter() - start)
    return {key: 1e3 * float(np.median(t[1:])) for key, t in times.items()}


def memory_child(size, variant, radius, warm, path):
    """Runs in a fresh subprocess: peak RSS growth (MB) while running one configuration twice (Linux)."""
    if variant == "opencv":
        fn, args = opencv(radius)[1], inputs
    else:
        import tensorflow as tf

        fn = variants(radius, path)[variant]

        def args(n):
            return [tf.constant(a) for a in inputs(n)]

    if warm:
        sync(fn(*args(64)))
    g, x = args(size)
    status = pathlib.Path("/proc/self/status")
    pathlib.Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
    before = int(status.read_text().split("VmRSS:")[1].split()[0])
    for _ in range(2):
        sync(fn(g, x))
    print((int(status.read_text().split("VmHWM:")[1].split()[0]) - before) / 1024)


def peak_mb(size, variant, radius, warm, path="native"):
    command = [sys.executable, __file__, "--memory", str(size), variant, str(radius), "--path", path] + (
        ["--warm"] if warm else [])
    out = subprocess.run(command, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def row(what, measured, goal):
    print(f"| {what:<62} | {measured:<40} | {goal:<7} |", flush=True)


def main(quick, threads, path):
    import tensorflow as tf

    if threads:
        import cv2

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
        cv2.setNumThreads(threads)
    small, large = (64, 128) if quick else (512, 2048)
    radius, rounds = (8, 1) if quick else (60, 7)
    name, _ = opencv(radius)
    paths = ["native", "xla"] if path == "both" else [path]
    missing = native_state() if "native" in paths else ""
    print(f"TensorFlow {tf.__version__}; 1-channel float32 guide and x, batch 1, eps={EPS}, r={radius}; OpenCV side:"
          f" {name}; medians of {rounds} interleaved round(s), ms; load average {os.getloadavg()[0]:.1f}"
          f" on {os.cpu_count()} CPUs; threads: {threads or 'default'}; paths: "
          f"{', '.join(PATHS[p] for p in paths)}" + (f" (native skipped: {missing})" if missing else ""))
    if missing:
        paths.remove("native")
    times = {}
    for size in (small, large):
        g, x = inputs(size)
        gt, xt = tf.constant(g), tf.constant(x)
        fns = {(p, k): (fn, (gt, xt)) for p in paths for k, fn in variants(radius, p).items()
               if size == large or k == "forward"}
        fns["opencv"] = (opencv(radius)[1], (g, x))
        times[size] = median_times(fns, rounds)
    print(f"| {'row':<62} | {'measured':<40} | {'goal':<7} |\n|{'-' * 64}|{'-' * 42}|{'-' * 9}|")
    for size in (small, large):
        t = times[size]
        for p in paths:
            row(f"forward {size}², vs OpenCV ({PATHS[p]})", f"{t[p, 'forward']:.1f} vs {t['opencv']:.1f} ms: "
                f"{t[p, 'forward'] / t['opencv']:.2f}x", "<= 1.0x")
    t = times[large]
    for p in paths:
        row(f"forward + backward / forward {large}², x and guide ({PATHS[p]})",
            f"{t[p, 'fwd+bwd']:.1f} / {t[p, 'forward']:.1f} ms: {t[p, 'fwd+bwd'] / t[p, 'forward']:.2f}x", "<= 2.0x")
    for p in paths:
        row(f"forward + backward / forward {large}², x alone ({PATHS[p]})",
            f"{t[p, 'fwd+bwd x']:.1f} / {t[p, 'forward']:.1f} ms: {t[p, 'fwd+bwd x'] / t[p, 'forward']:.2f}x",
            "<= 2.0x")
    for warm in (False,) if quick else (False, True):
        cv_mb = peak_mb(large, "opencv", radius, warm)
        for p in paths:
            tf_mb = peak_mb(large, "forward", radius, warm, p)
            row(f"forward peak memory {large}², vs OpenCV ({'warm' if warm else 'fresh process'}, {PATHS[p]})",
                f"{tf_mb:.0f} vs {cv_mb:.0f} MB: {tf_mb / max(cv_mb, 1.0):.2f}x", "<= 2x")
    for p, error in float32_errors(paths, large, 8).items():
        row(f"float32 vs float64 max error {large}², r = 8 ({PATHS[p]})", f"{error:.1e}", "<= 3e-5")
    if quick:
        return
    print("\nOver radii (ms, medians of 3 rounds; bwd = fwd+bwd − fwd, x and guide; ratio: fwd / OpenCV; no XLA: the "
          "TensorFlow path with jit_compile=False; autodiff: TensorFlow's gradient of its forward, "
          "custom_gradient=False)")
    header = (f"{'size':>5} {'r':>4} | {'OpenCV':>7} | {'native':>7} {'ratio':>5} {'bwd':>7} | {'XLA':>7} {'ratio':>5}"
              f" {'bwd':>7} | {'no XLA':>7} {'autodiff':>9}")
    print(header + "\n" + "-" * len(header))
    for size in (small, large):
        g, x = inputs(size)
        gt, xt = tf.constant(g), tf.constant(x)
        for r in (2, 8, 60, 120):
            fns = {(p, k): (fn, (gt, xt)) for p in paths for k, fn in variants(r, p, extra=p == "xla").items()
                   if k != "fwd+bwd x"}
            fns["opencv"] = (opencv(r)[1], (g, x))
            t = median_times(fns, 3)

            def cells(p, t=t):
                if p not in paths:
                    return f"{'-':>7} {'-':>5} {'-':>7}"
                return (f"{t[p, 'forward']:7.1f} {t[p, 'forward'] / t['opencv']:5.2f}"
                        f" {t[p, 'fwd+bwd'] - t[p, 'forward']:7.1f}")

            extra = (f"{t['xla', 'no XLA']:7.1f} {t['xla', 'autodiff'] - t['xla', 'forward']:9.1f}" if "xla" in paths
                     else f"{'-':>7} {'-':>9}")
            print(f"{size:>5} {r:>4} | {t['opencv']:7.1f} | {cells('native')} | {cells('xla')} | {extra}", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="64² and 128², r = 8, one round (a smoke test)")
    parser.add_argument("--threads", type=int, default=0,
                        help="TensorFlow's and OpenCV's threads (default: theirs); 1 is steadier on a busy machine")
    parser.add_argument("--path", choices=("both", "native", "xla"), default="both",
                        help="the C++ kernel, the TensorFlow (XLA) path, or both side by side (default)")
    parser.add_argument("--memory", nargs=3, metavar=("SIZE", "VARIANT", "RADIUS"), help=argparse.SUPPRESS)
    parser.add_argument("--warm", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory:
        memory_child(int(args.memory[0]), args.memory[1], int(args.memory[2]), args.warm,
                     "native" if args.path == "both" else args.path)
    else:
        main(args.quick, args.threads, args.path)
