"""``tfdehaze-dehaze --model minet-official`` per image, as a user runs it, against the same model called in one
`tf.function`.

    python benchmarks/dehaze_cli.py [--images 12] [--rounds 2] [--precision float32 auto] [--quick]

The command side runs the installed ``tfdehaze-dehaze`` (a subprocess, ``--quiet``) on a folder of 1 image and on
a folder of ``--images`` images, all 620x460 PNGs (RESIDE SOTS' size; the hazy half of `_common.write_pairs`):
the difference of the two wall times divided by ``--images`` - 1 is its time per image with start-up, model loading
and the first (tracing) call excluded, and with reading and writing the PNGs included. The other side loads the
same model in this process and calls it in one `tf.function` (traced once, then the median over the images), the
figure a notebook user gets. Rounds are interleaved. ``--precision``: the policies to time (``auto``: what the
command picks here, `tfdehaze.precision.resolve`).

``minet-official`` is the preset (the released weights converted by ``data_prep/convert_minet.py``) when its file
is in place; otherwise the same network with random weights, saved as a ``.keras`` file and passed by path (the
same time). ``--quick``: 32 x 40 images, 1 and 2 images, one round, float32 (checks the script runs).
"""
import argparse
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import _common  # noqa: E402  benchmarks/_common.py
import numpy as np  # noqa: E402


def model_argument(root):
    """"minet-official" when its weights are in place, else a .keras file of the same network (random weights)."""
    from tfdehaze.models import registry

    try:
        registry.load("minet-official")
        return "minet-official", "released weights"
    except FileNotFoundError:
        from tfdehaze.models.minet import MINetOfficial

        model = MINetOfficial()
        model(np.zeros([1, 32, 32, 3], np.float32))
        path = pathlib.Path(root) / "minet-official-random.keras"
        model.save(path)
        return str(path), "random weights (convert the released ones: data_prep/convert_minet.py)"


def command_seconds(script, model, folder, out, policy):
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    done = subprocess.run([script, str(folder), "--out", str(out), "--model", model, "--quiet",
                           "--precision", policy], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"tfdehaze-dehaze failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return seconds


def in_process_seconds(model, folder, policy):
    """Median seconds per image of the model in one tf.function (traced on the first image, not timed)."""
    import tensorflow as tf

    from tfdehaze import precision
    from tfdehaze.data import io
    from tfdehaze.inference import load_model

    with precision.policy(policy):
        net = load_model(model)
    run = tf.function(lambda x: net(x, training=False)["dehazed"])
    images = [tf.constant(io.read_image(path)[None]) for path in sorted(pathlib.Path(folder).glob("*.png"))]
    run(images[0]).numpy()
    return statistics.median(_common.timed(lambda: run(images.pop()).numpy(), len(images), warmup=0))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--precision", nargs="+", default=["float32", "auto"])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    h, w = 460, 620
    if args.quick:
        args.images, args.rounds, args.precision, (h, w) = 2, 1, ["float32"], (32, 40)
    script = shutil.which("tfdehaze-dehaze", path=str(pathlib.Path(sys.executable).parent)) \
        or shutil.which("tfdehaze-dehaze")
    if script is None:
        sys.exit("tfdehaze-dehaze is not installed: pip install -e .")
    from tfdehaze.precision import resolve

    policies = list(dict.fromkeys(resolve(p)[0] for p in args.precision))
    root = pathlib.Path(tempfile.mkdtemp())
    one = _common.write_pairs(root / "one", 1, h, w)[0]
    many = _common.write_pairs(root / "many", args.images, h, w)[0]
    model, weights = model_argument(root)
    per_image = {policy: [] for policy in policies}
    start_up = {policy: [] for policy in policies}
    graph = {policy: [] for policy in policies}
    for _ in range(args.rounds):
        for policy in policies:
            single = command_seconds(script, model, one, root / "out", policy)
            full = command_seconds(script, model, many, root / "out", policy)
            per_image[policy].append((full - single) / (args.images - 1))
            start_up[policy].append(single - per_image[policy][-1])
            graph[policy].append(in_process_seconds(model, many, policy))
    shutil.rmtree(root, ignore_errors=True)
    print(f"tfdehaze-dehaze --model minet-official ({weights}), {w}x{h} PNGs, per image with start-up excluded "
          f"(({args.images} images - 1 image) / {args.images - 1}), vs the model in one tf.function; "
          f"median of {args.rounds} interleaved rounds")
    header = f"{'precision':<16} {'command s/image':>16} {'tf.function s/image':>20} {'command / tf.function':>22}"
    print(header)
    print("-" * len(header))
    for policy in policies:
        command, function = statistics.median(per_image[policy]), statistics.median(graph[policy])
        print(f"{policy:<16} {command:>16.3f} {function:>20.3f} {command / function:>21.2f}x")
    print("command start-up (Python, TensorFlow, model, first trace): "
          + ", ".join(f"{policy} {statistics.median(start_up[policy]):.1f} s" for policy in policies))


if __name__ == "__main__":
    main()
