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

``--authors-repo DIR`` adds, in each round, the same step of the Guided-Pix2Pix authors' public TF2 code: a clone of
https://github.com/92xianshen/guided-pix2pix (``git clone`` it; nothing here downloads it). Their ``model/pix2pix.py``
builds the generator (U-Net with 9 down-samplings, instance norm, their guided filter r = 60, eps = 1e-4) and the
PatchGAN; the step is what their ``train.py`` does per batch: the airlight estimate (eager, as there), then one
``tf.function`` with a persistent tape, BCE-from-logits + 100·L1, two Adams (beta_1 = 0.5) with their exponential
decay. Their code needs Keras 2: it runs in a subprocess with ``TF_USE_LEGACY_KERAS=1`` and the ``tf_keras``
package (``pip install "tf_keras==2.21.*"``), float32 as published, on images in [-1, 1] at 512 px (their U-Net
takes only multiples of 512). The extra table gives each of our policies' step time over theirs.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

import _common  # benchmarks/_common.py

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

POLICIES = ("float32", "mixed_bfloat16", "mixed_float16")
ROWS = ("gan step", "minet-official", "conv stack train", "conv stack infer")


def child(policy, size, repeats):
    import keras
    import tensorflow as tf

    from tfdehaze import inference, precision
    from tfdehaze.models import GuidedPix2Pix, PatchDiscriminator
    from tfdehaze.models.minet import MINetOfficial
    from tfdehaze.train import GANStep, build_optimizer, get_recipe

    def timed(fn):
        return _common.timed(fn, repeats)

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


def authors_child(repo, size, repeats):
    """The Guided-Pix2Pix authors' step (see the module docstring), timed like `child`'s "gan step"."""
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    sys.path.insert(0, repo)
    import tensorflow as tf
    from model import pix2pix  # their module, from the clone

    assert tf.keras.__name__.startswith("tf_keras"), f"needs Keras 2 (tf_keras), got {tf.keras.__name__}"
    generator = pix2pix.dehaze_generator(input_channels=3, estimation_channels=1, norm_type="instancenorm")
    discriminator = pix2pix.discriminator(input_channels=3, norm_type="instancenorm", target=True)
    schedule = tf.keras.optimizers.schedules.ExponentialDecay(2e-4, decay_steps=1000, decay_rate=0.96)
    g_optimizer, d_optimizer = (tf.keras.optimizers.Adam(schedule, beta_1=0.5) for _ in range(2))
    bce = tf.keras.losses.BinaryCrossentropy(from_logits=True)

    def airlight(hazy):                   # the brightest pixel in HSV value, eager as in their loop
        value = tf.reshape(tf.image.rgb_to_hsv(hazy * 0.5 + 0.5)[..., 2], [-1])
        return tf.reshape(hazy, [-1, 3])[tf.argmax(value)][None, None, None]

    @tf.function
    def step(hazy, clear, light):
        with tf.GradientTape(persistent=True) as tape:
            dehazed = generator([hazy, light], training=True)[0]
            real, fake = discriminator([hazy, clear], training=True), discriminator([hazy, dehazed], training=True)
            g_loss = bce(tf.ones_like(fake), fake) + 100.0 * tf.reduce_mean(tf.abs(clear - dehazed))
            d_loss = bce(tf.ones_like(real), real) + bce(tf.zeros_like(fake), fake)
        for loss, model, optimizer in ((g_loss, generator, g_optimizer), (d_loss, discriminator, d_optimizer)):
            optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables),
                                          model.trainable_variables))
        return g_loss

    hazy = tf.random.uniform([1, size, size, 3], -1.0, 1.0, seed=0)
    clear = tf.random.uniform([1, size, size, 3], -1.0, 1.0, seed=1)
    print(json.dumps({"gan step": _common.timed(lambda: float(step(hazy, clear, airlight(hazy))), repeats)}))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--policies", nargs="+", choices=POLICIES, default=list(POLICIES),
                        help="float32 is always timed (the baseline)")
    parser.add_argument("--authors-repo", metavar="DIR",
                        help="a clone of github.com/92xianshen/guided-pix2pix: time their GAN step beside ours")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--child", nargs=3, metavar=("POLICY", "SIZE", "REPEATS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        if args.child[0] == "authors":
            authors_child(args.authors_repo, int(args.child[1]), int(args.child[2]))
        else:
            child(args.child[0], int(args.child[1]), int(args.child[2]))
        return
    if args.authors_repo:
        _check_authors(args.authors_repo)
    if args.quick:
        args.size, args.repeats, args.rounds = 32, 1, 1
    from tfdehaze.precision import default_policy
    policy, why = default_policy()
    print(f"default policy here: {policy} ({why})")
    policies = ["float32"] + [p for p in args.policies if p != "float32"]
    if args.quick:
        policies = list(POLICIES[:2])   # float16 is emulated (slow) on CPUs
    times = {policy: {row: [] for row in ROWS} for policy in policies}
    authors = []
    for _ in range(args.rounds):
        for policy in policies + (["authors"] if args.authors_repo else []):
            size = max(args.size, 512) if policy == "authors" else args.size
            extra = ["--authors-repo", args.authors_repo] if policy == "authors" else []
            done = subprocess.run([sys.executable, __file__, "--child", policy, str(size), str(args.repeats)] + extra,
                                  capture_output=True, text=True)
            if done.returncode:
                sys.exit(f"{policy} failed:\n{done.stderr[-3000:]}")
            for row, values in json.loads(done.stdout.strip().splitlines()[-1]).items():
                (authors if policy == "authors" else times[policy][row]).extend(values)
    print(f"{args.size} px, batch 1, {args.rounds} rounds x {args.repeats} repeats (median seconds; speed-up over "
          "float32)")
    print(f"{'row':<18}" + "".join(f"{policy:>26}" for policy in policies))
    for row in ROWS:
        base = statistics.median(times["float32"][row])
        cells = [f"{statistics.median(times[p][row]):9.3f} s ({base / statistics.median(times[p][row]):5.2f}x)"
                 for p in policies]
        print(f"{row:<18}" + "".join(f"{cell:>26}" for cell in cells))
    if authors:
        theirs = statistics.median(authors)
        print(f"\nGAN step beside the authors' TF2 code (Keras 2, float32, {max(args.size, 512)} px): "
              f"theirs {theirs:.3f} s; ours / theirs:")
        print("".join(f"{policy:>26}" for policy in policies))
        print("".join(f"{statistics.median(times[p]['gan step']) / theirs:>25.2f}x" for p in policies))


def _check_authors(repo):
    """Exit with how to get what is missing: their clone, or Keras 2 (tf_keras) to run it."""
    import importlib.util

    if not os.path.isfile(os.path.join(repo, "model", "pix2pix.py")):
        sys.exit(f"--authors-repo {repo}: no model/pix2pix.py there; "
                 "git clone https://github.com/92xianshen/guided-pix2pix")
    if importlib.util.find_spec("tf_keras") is None:
        sys.exit('--authors-repo needs Keras 2 to run their code: pip install "tf_keras==2.21.*"')


if __name__ == "__main__":
    main()
