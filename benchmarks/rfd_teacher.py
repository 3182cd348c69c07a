"""RFD's x2 super-resolution teacher (MC-FSRCNN) on the bundled sample: PSNR against bicubic x2 of the same input.

    python benchmarks/rfd_teacher.py [--size 64] [--steps 4000] [--lr 2e-3] [--plain] [--quick]

Trains the ``rfd-teacher`` recipe (DSC variant; ``--plain`` for the plain one) on the clear images of 6 of the 8
sample pairs (input: the clear image downscaled by 2 with antialiased bicubic; target: the clear image; MSE), with a
cosine learning-rate decay to 0 over ``--steps``, then reports PSNR on the 2 held-out clear images of the teacher's
x2 output and of bicubic x2 upsampling of the same low-resolution input, and the training log every 10 %.
``--quick``: 32 px, 2 steps (seconds; checks that the script runs).
"""
import argparse
import os
import pathlib
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--plain", action="store_true", help="rfd-teacher-plain (no depthwise-separable convs)")
    parser.add_argument("--quick", action="store_true", help="32 px, 2 steps: checks the script runs")
    args = parser.parse_args()
    if args.quick:
        args.size, args.steps = 32, 2

    import keras
    import numpy as np
    import pandas as pd
    import tensorflow as tf

    from tfdehaze import metrics
    from tfdehaze.data import datasets, pipeline, sample
    from tfdehaze.train import get_recipe, train

    work = pathlib.Path(tempfile.mkdtemp(prefix="rfd-teacher-"))
    pairs = datasets.read_manifest(sample.sample_dir() / "manifest.csv")
    datasets.write_manifest(pairs.iloc[:6], work / "train.csv")
    recipe = get_recipe("rfd-teacher").replace(
        model="rfd-teacher-plain" if args.plain else "rfd-teacher", steps=args.steps, image_size=args.size,
        learning_rate=args.lr, log_every=max(1, args.steps // 10), checkpoint_every=args.steps,
        sample_every=args.steps, data={"manifest": str(work / "train.csv")},
        lr_schedule={"kind": "cosine_restarts", "first_decay_steps": args.steps, "t_mul": 1.0})
    result = train(recipe, run_dir=work / "teacher", verbose=0)
    teacher = keras.saving.load_model(result["keras"])
    val = next(iter(pipeline.paired_dataset(pairs.iloc[6:], image_size=args.size, flip=False, shuffle=False,
                                            batch_size=2)))
    clear = val["clear"]
    low = tf.clip_by_value(tf.image.resize(clear, [args.size // 2] * 2, "bicubic", antialias=True), 0.0, 1.0)
    rows = {"bicubic x2": tf.image.resize(low, [args.size] * 2, "bicubic"),
            f"{recipe.model} x2": teacher(low)["dehazed"]}
    table = pd.DataFrame([{"method": name, "psnr": float(np.mean(metrics.psnr(tf.clip_by_value(x, 0.0, 1.0), clear))),
                           "ssim": float(np.mean(metrics.ssim(tf.clip_by_value(x, 0.0, 1.0), clear)))}
                          for name, x in rows.items()])
    print(f"{recipe.model}: {teacher.count_params()} parameters, {args.steps} steps at {args.size} px, "
          f"lr {args.lr} (cosine to 0); 2 held-out sample images")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print("\ntraining log:\n" + (work / "teacher" / "metrics.csv").read_text())


if __name__ == "__main__":
    main()
