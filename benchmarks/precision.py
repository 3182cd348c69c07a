"""float32 against the mixed-precision policies: the Guided-Pix2Pix GAN training step and MI-Net inference.

    python benchmarks/precision.py [--size 512] [--repeats 3] [--rounds 2] [--policies ...] [--quick]

Rows (each configuration in a FRESH subprocess, rounds interleaved float32, mixed_bfloat16, mixed_float16, ...):

- ``gan step``: `tfdehaze.train.GANStep` of the guided-pix2pix recipe (the paper's generator, depth log2(size),
  radius 60; PatchGAN; two Adams; float16 with loss scaling), batch 1 of ``--size`` px, compiled, one warm-up step.
- ``minet-official``: `MINetOfficial` (the released network; random weights time the same) on one 460x620 image,
  compiled (`tfdehaze.inference.compiled`), one warm-up call.
- ``conv stack``: seven 3x3 64-channel convolutions with ReLU at ``--size`` px, a training step and an inference
  call: what the hardware's reduced-precision units give on plain convolutions.

The table gives the median seconds over ``--repeats`` calls and all rounds, and the speed-up over float32. The
policy a run would pick by default on this machine (`tfdehaze.precision.default_policy`) is printed first.
``--quick``: 32 px, one round, one repeat, float32 and mixed_bfloat16 only (checks the script runs).
"""
import argparse
import json
import statistics
import subprocess
import sys
import time

POLICIES = ("float32", "mixed_bfloat16", "mixed_float16")
ROWS = ("gan step", "minet-official", "conv stack train", "conv stack infer")


def child(policy, size, repeats):
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import tensorflow as tf

    from tfdehaze import inference, precision
    from tfdehaze.models import GuidedPix2Pix, PatchDiscriminator
    from tfdehaze.models.minet import MINetOfficial
    from tfdehaze.train import GANStep, build_optimizer, get_recipe

    def timed(fn):
        fn()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return times

    results = {}
    with precision.policy(policy):
        recipe = get_recipe("guided-pix2pix")
        depth = max(3, size.bit_length() - 1)
        step = GANStep(GuidedPix2Pix(depth=depth), PatchDiscriminator(), build_optimizer(recipe),
                       build_optimizer(recipe))
        batch = {"hazy": tf.random.uniform([1, size, size, 3], seed=0),
                 "clear": tf.random.uniform([1, size, size, 3], seed=1)}
        step.build(tf.distribute.get_strategy(), batch, 1)
        results["gan step"] = timed(lambda: {k: float(v) for k, v in step(batch).items()})

        minet = MINetOfficial()
        h, w = (460, 620) if size >= 256 else (size, size)
        image = tf.random.uniform([1, h, w, 3], seed=2)
        run = inference.compiled(lambda x: minet(x)["dehazed"])
        results["minet-official"] = timed(lambda: run(image).numpy())

        stack = keras.Sequential([keras.Input((size, size, 3))]
                                 + [keras.layers.Conv2D(64, 3, padding="same", activation="relu") for _ in range(6)]
                                 + [keras.layers.Conv2D(3, 3, padding="same")])
        optimizer = keras.optimizers.Adam(1e-4)
        if policy == "mixed_float16":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        x = tf.random.uniform([1, size, size, 3], seed=3)

        @tf.function
        def train_step():
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.abs(tf.cast(stack(x, training=True), tf.float32) - x))
                scaled = optimizer.scale_loss(loss) if hasattr(optimizer, "scale_loss") else loss
            optimizer.apply_gradients(zip(tape.gradient(scaled, stack.trainable_variables),
                                          stack.trainable_variables))
            return loss

        infer = tf.function(lambda: stack(x, training=False))
        results["conv stack train"] = timed(lambda: float(train_step()))
        results["conv stack infer"] = timed(lambda: infer().numpy())
    print(json.dumps(results))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--policies", nargs="+", choices=POLICIES, default=list(POLICIES),
                        help="float32 is always timed (the baseline)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--child", nargs=3, metavar=("POLICY", "SIZE", "REPEATS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child[0], int(args.child[1]), int(args.child[2]))
        return
    if args.quick:
        args.size, args.repeats, args.rounds = 32, 1, 1
    from tfdehaze.precision import default_policy
    policy, why = default_policy()
    print(f"default policy here: {policy} ({why})")
    policies = ["float32"] + [p for p in args.policies if p != "float32"]
    if args.quick:
        policies = POLICIES[:2]   # float16 is emulated (slow) on CPUs
    times = {policy: {row: [] for row in ROWS} for policy in policies}
    for _ in range(args.rounds):
        for policy in policies:
            done = subprocess.run([sys.executable, __file__, "--child", policy, str(args.size), str(args.repeats)],
                                  capture_output=True, text=True)
            if done.returncode:
                sys.exit(f"{policy} failed:\n{done.stderr[-3000:]}")
            for row, values in json.loads(done.stdout.strip().splitlines()[-1]).items():
                times[policy][row] += values
    print(f"{args.size} px, batch 1, {args.rounds} rounds x {args.repeats} repeats (median seconds; speed-up over "
          "float32)")
    print(f"{'row':<18}" + "".join(f"{policy:>26}" for policy in policies))
    for row in ROWS:
        base = statistics.median(times["float32"][row])
        cells = [f"{statistics.median(times[p][row]):9.3f} s ({base / statistics.median(times[p][row]):5.2f}x)"
                 for p in policies]
        print(f"{row:<18}" + "".join(f"{cell:>26}" for cell in cells))


if __name__ == "__main__":
    main()
