"""Seconds per step and peak memory of the Guided-Pix2Pix GAN training step, custom-gradient GuidedFilter vs autodiff.

    python benchmarks/train_step.py [--sizes 256 512] [--repeats 3] [--radius 60] [--quick]

``--quick``: 32 px, radius 2, one timed step (seconds; checks that the script runs, the figures mean nothing).

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


def child(size, custom_gradient, repeats, radius):
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    from tfdehaze.models import GuidedPix2Pix, PatchDiscriminator
    from tfdehaze.train import GANStep, build_optimizer, get_recipe

    depth = int(math.log2(size))
    generator = GuidedPix2Pix(depth=depth, radius=radius, custom_gradient=custom_gradient)
    recipe = get_recipe("guided-pix2pix")
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--radius", type=int, default=60)
    parser.add_argument("--quick", action="store_true", help="32 px, radius 2, 1 repeat: checks the script runs")
    parser.add_argument("--child", nargs=2, metavar=("SIZE", "CUSTOM"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.radius, args.repeats = [32], 2, 1
    if args.child:
        child(int(args.child[0]), args.child[1] == "1", args.repeats, args.radius)
        return

    print(f"Guided-Pix2Pix GAN step (G + D, Adam), batch 1, radius {args.radius}; median of {args.repeats} steps "
          "after one warm-up; each row a fresh subprocess (peak RSS = its high-water mark); 2-core CPU machine")
    header = f"{'size':>5} {'depth':>5} {'GuidedFilter grad':>18} {'s/step':>8} {'1st step s':>10} " \
             f"{'base MB':>8} {'peak RSS MB':>11}"
    print(header)
    print("-" * len(header))
    for size in args.sizes:
        for custom in (True, False):
            done = subprocess.run([sys.executable, __file__, "--child", str(size), "1" if custom else "0",
                                   "--repeats", str(args.repeats), "--radius", str(args.radius)],
                                  capture_output=True, text=True)
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


if __name__ == "__main__":
    main()
