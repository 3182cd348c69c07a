"""Peak training memory and step time of MI-Net (paper configuration) against T, with and without recompute.

    python benchmarks/minet_memory.py [--sizes 256 512] [--steps 4 8 12] [--filters 64] [--repeats 3] [--quick]

``--quick``: 32 px, T = 1, 8 filters, one timed step (seconds; checks that the script runs).

Each configuration runs in a FRESH subprocess (so high-water marks do not mix): build MINet, Adam, one compiled
L1 training step on a batch of one random image to warm up, then ``--repeats`` timed steps. "peak RSS" is that
subprocess's resident-set high-water mark (``getrusage(RUSAGE_SELF).ru_maxrss``), which includes the TensorFlow
runtime and the graph compilation (the "base" column: RSS after building the model, before training). The
machine is shared: times are noisy; the memory column is what to read.
"""
import argparse
import json
import resource
import statistics
import subprocess
import sys

import _common  # benchmarks/_common.py


def child(size, steps, recompute, filters, repeats):
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import tensorflow as tf

    from tfdehaze.models.minet import MINet

    model = MINet(filters=filters, steps=steps, recompute=recompute)
    hazy = tf.random.uniform([1, size, size, 3], seed=0)
    clear = tf.random.uniform([1, size, size, 3], seed=1)
    model(hazy[:, :32, :32])
    optimizer = keras.optimizers.Adam(1e-4)
    optimizer.build(model.trainable_variables)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    @tf.function
    def train_step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.abs(model(hazy, training=True)["dehazed"] - clear))
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
        return loss

    times = _common.timed(lambda: train_step().numpy(), repeats)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"base_mb": base, "peak_mb": peak, "step_s": statistics.median(times)}))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    p.add_argument("--steps", type=int, nargs="+", default=[4, 8, 12])
    p.add_argument("--filters", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="32 px, T = 1, 8 filters, 1 repeat: checks the script runs")
    p.add_argument("--child", nargs=3, metavar=("SIZE", "STEPS", "RECOMPUTE"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.quick:
        args.sizes, args.steps, args.filters, args.repeats = [32], [1], 8, 1
    if args.child:
        size, steps, recompute = args.child
        return child(int(size), int(steps), recompute == "1", args.filters, args.repeats)

    print(f"MI-Net paper configuration, filters={args.filters}, batch 1, one L1 + Adam step; "
          f"peak RSS of a fresh subprocess per row (includes the TF runtime; base = after model build)")
    print(f"{'size':>5} {'T':>3} {'recompute':>9} {'base MB':>8} {'peak MB':>8} {'peak-base':>9} {'step s':>7}")
    for size in args.sizes:
        for steps in args.steps:
            for recompute in (False, True):
                cmd = [sys.executable, __file__, "--filters", str(args.filters), "--repeats", str(args.repeats),
                       "--child", str(size), str(steps), "1" if recompute else "0"]
                run = subprocess.run(cmd, capture_output=True, text=True)
                lines = [line for line in run.stdout.splitlines() if line.startswith("{")]
                if run.returncode != 0 or not lines:
                    reason = (run.stderr.strip().splitlines() or ["?"])[-1][:60]
                    print(f"{size:>5} {steps:>3} {str(recompute):>9}  failed (exit {run.returncode}): {reason}")
                    continue
                r = json.loads(lines[-1])
                print(f"{size:>5} {steps:>3} {str(recompute):>9} {r['base_mb']:>8.0f} {r['peak_mb']:>8.0f} "
                      f"{r['peak_mb'] - r['base_mb']:>9.0f} {r['step_s']:>7.2f}", flush=True)


if __name__ == "__main__":
    main()
