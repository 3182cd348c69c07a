"""Seconds per step and peak memory of the Guided-Pix2Pix GAN training step, custom-gradient GuidedFilter vs autodiff.

    python benchmarks/train_step.py [--sizes 256 512] [--repeats 3] [--radius 60] [--precision auto] [--quick]

``--quick``: 32 px, radius 2, one timed step (seconds; checks that the script runs, the figures mean nothing).

``--precision``: the dtype policy of the steps (default ``auto``: what ``tfdehaze-train`` picks on this machine,
`tfdehaze.precision.resolve`).

A second table times the input pipeline alone (`tfdehaze.data.pipeline.paired_dataset`, as ``tfdehaze-train``
builds it: PNG decode, antialiased resize to ``size``, random flip, shuffle, batch 1, prefetch) on 16 pairs of
620x460 PNGs (the size of RESIDE's SOTS; smooth images with noise, written to a temporary folder), in a fresh
subprocess: images per second over 200 batches after 10 warm-up batches, and that rate over the fastest step rate
of the first table (goal: at least 5x, so the input never holds a step up).

The step is `tfdehaze.train.GANStep` (G and D updated, Adam as in the guided-pix2pix recipe) on a batch of one random
image pair, compiled once (one warm-up step), then ``--repeats`` timed steps (median reported). The model is the
paper's (base 64 filters, radius 60, eps 1e-4) with the U-Net depth that brings the image to 1x1 (9 at 512, 8 at
256, as Pix2Pix's unet_256). ``custom_gradient=True`` uses the GuidedFilter's exact hand-written backward
(Algorithm 2 corrected); ``False`` lets TensorFlow differentiate the same forward.

Each configuration runs in a FRESH subprocess, so memory high-water marks do not mix: "peak RSS" is that subprocess's
resident-set high-water mark (``getrusage(RUSAGE_SELF).ru_maxrss``), including the TensorFlow runtime and tracing;
"base" is the RSS after building the models and optimizers, before the first step. The machine is shared: step
times are noisy.
"""
import argparse
import json
import math
import resource
import statistics
import subprocess
import sys
import time


def child(size, custom_gradient, repeats, radius, policy):
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    from tfdehaze import precision
    from tfdehaze.models import GuidedPix2Pix, PatchDiscriminator
    from tfdehaze.train import GANStep, build_optimizer, get_recipe

    depth = int(math.log2(size))
    recipe = get_recipe("guided-pix2pix")
    with precision.policy(policy):
        generator = GuidedPix2Pix(depth=depth, radius=radius, custom_gradient=custom_gradient)
        step = GANStep(generator, PatchDiscriminator(), build_optimizer(recipe), build_optimizer(recipe))
    batch = {"hazy": tf.random.uniform([1, size, size, 3], seed=0),
             "clear": tf.random.uniform([1, size, size, 3], seed=1)}
    strategy = tf.distribute.get_strategy()
    step.build(strategy, batch, global_batch_size=1)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    step(batch)["g_loss"].numpy()
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step(batch)["g_loss"].numpy()
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"depth": depth, "base_mb": base, "peak_mb": peak, "first_s": first,
                      "step_s": statistics.median(times)}))


def pipeline_child(size, batches):
    """Images per second of the training input pipeline alone (see the module docstring)."""
    import os
    import tempfile

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import _common  # benchmarks/_common.py

    from tfdehaze.data import datasets, pipeline

    h, w = (460, 620) if size >= 256 else (size + 8, size + 16)
    pairs = datasets.pair_folders(*_common.write_pairs(tempfile.mkdtemp(), 16, h, w))
    ds = pipeline.paired_dataset(pairs, image_size=size, flip=True, batch_size=1, shuffle=True, repeat=True,
                                 validate=False)
    batches_iter = iter(ds)
    for _ in range(10):
        next(batches_iter)
    start = time.perf_counter()
    for _ in range(batches):
        next(batches_iter)["hazy"].numpy()
    print(json.dumps({"images_per_s": batches / (time.perf_counter() - start), "source": f"{w}x{h}"}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--radius", type=int, default=60)
    parser.add_argument("--precision", default="auto", help="float32, mixed_bfloat16, mixed_float16 or auto")
    parser.add_argument("--quick", action="store_true", help="32 px, radius 2, 1 repeat: checks the script runs")
    parser.add_argument("--child", nargs=2, metavar=("SIZE", "CUSTOM"), help=argparse.SUPPRESS)
    parser.add_argument("--pipeline-child", nargs=2, metavar=("SIZE", "BATCHES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.radius, args.repeats = [32], 2, 1
    if args.pipeline_child:
        pipeline_child(int(args.pipeline_child[0]), int(args.pipeline_child[1]))
        return
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from tfdehaze.precision import resolve

    policy, why = resolve(args.precision)
    if args.child:
        child(int(args.child[0]), args.child[1] == "1", args.repeats, args.radius, policy)
        return

    print(f"Guided-Pix2Pix GAN step (G + D, Adam), batch 1, radius {args.radius}, {policy} ({why}); median of "
          f"{args.repeats} steps after one warm-up; each row a fresh subprocess (peak RSS = its high-water mark); "
          "2-core CPU machine")
    header = f"{'size':>5} {'depth':>5} {'GuidedFilter grad':>18} {'s/step':>8} {'1st step s':>10} " \
             f"{'base MB':>8} {'peak RSS MB':>11}"
    print(header)
    print("-" * len(header))
    fastest = {}
    for size in args.sizes:
        for custom in (True, False):
            done = subprocess.run([sys.executable, __file__, "--child", str(size), "1" if custom else "0",
                                   "--repeats", str(args.repeats), "--radius", str(args.radius),
                                   "--precision", policy], capture_output=True, text=True)
            label = "custom (Alg. 2)" if custom else "autodiff"
            lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
            if done.returncode or not lines:
                print(f"{size:>5} {'':>5} {label:>18}  failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
                continue
            row = json.loads(lines[-1])
            if "error" in row:
                print(f"{size:>5} {'':>5} {label:>18}  {row['error']}")
                continue
            print(f"{size:>5} {row['depth']:>5} {label:>18} {row['step_s']:>8.2f} {row['first_s']:>10.1f} "
                  f"{row['base_mb']:>8.0f} {row['peak_mb']:>11.0f}", flush=True)
            fastest[size] = min(fastest.get(size, math.inf), row["step_s"])

    batches = 20 if args.quick else 200
    print(f"\nInput pipeline alone (paired_dataset: PNG decode, resize, flip, shuffle, batch 1), {batches} batches "
          "after 10 warm-up, fresh subprocess")
    header = f"{'size':>5} {'source':>8} {'images/s':>9} {'fastest steps/s':>16} {'input / step rate':>18}"
    print(header)
    print("-" * len(header))
    for size in args.sizes:
        done = subprocess.run([sys.executable, __file__, "--pipeline-child", str(size), str(batches)],
                              capture_output=True, text=True)
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if done.returncode or not lines:
            print(f"{size:>5}  failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
            continue
        row = json.loads(lines[-1])
        rate = 1.0 / fastest[size] if size in fastest else math.nan
        print(f"{size:>5} {row['source']:>8} {row['images_per_s']:>9.1f} {rate:>16.2f} "
              f"{row['images_per_s'] / rate:>17.1f}x")


if __name__ == "__main__":
    main()
