"""KDDN on the bundled sample: validation PSNR of the student trained with and without the mimicking loss.

    python benchmarks/distillation.py [--size 64] [--teacher-steps 400] [--steps 300] [--filters 16] [--seeds 0 1]

Stage 1 trains the ``kddn-teacher`` autoencoder on the clean images of 6 of the 8 sample pairs (L1). Stage 2 trains
the ``kddn`` student for the same number of steps, from the same initial weights, with

- ``l1``: L1 only (no teacher),
- ``l1+fmil``: L1 + FMIL (KDDN eq. 5) against the frozen teacher,
- ``l1+wfmil``: L1 + WFMIL (eq. 6; the sample has transmission maps, so Psi_1 = norm(1 - t)),

and reports PSNR / SSIM on the 2 held-out pairs (the hazy input's own PSNR for reference). The perceptual term is
left out (it needs the 80 MB ImageNet VGG19 file; with it, pass ``--vgg19-weights``). Everything else is the
``kddn`` recipe at a small size, a constant learning rate and tiny widths, so this is a sanity check of the
mechanism on CPU, not the paper's Table 1.

``--quick``: 32 px, 2 teacher and 2 student steps, width 4, one seed (seconds; checks that the script runs).
"""
import argparse
import os
import pathlib
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--teacher-steps", type=int, default=400)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--filters", type=int, default=16)
    parser.add_argument("--blocks", type=int, default=1)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--vgg19-weights", default=None)
    parser.add_argument("--quick", action="store_true", help="32 px, 2 + 2 steps, width 4, one seed: checks the "
                        "script runs")
    args = parser.parse_args()
    if args.quick:
        args.size, args.teacher_steps, args.steps, args.filters, args.seeds = 32, 2, 2, 4, [0]

    import keras
    import numpy as np
    import pandas as pd
    import tensorflow as tf

    from tfdehaze import metrics
    from tfdehaze.data import datasets, pipeline, sample
    from tfdehaze.train import get_recipe, train

    work = pathlib.Path(tempfile.mkdtemp(prefix="kddn-bench-"))
    pairs = datasets.read_manifest(sample.sample_dir() / "manifest.csv")
    datasets.write_manifest(pairs.iloc[:6], work / "train.csv")
    val = next(iter(pipeline.paired_dataset(pairs.iloc[6:], image_size=args.size, flip=False, shuffle=False,
                                            batch_size=2)))
    common = {"image_size": args.size, "batch_size": 2, "log_every": 50, "checkpoint_every": 10**6,
              "sample_every": 10**6, "data": {"manifest": str(work / "train.csv")},
              "lr_schedule": {"kind": "constant"}, "learning_rate": args.lr, "epochs": None}
    teacher_kwargs = {"filters": args.filters}
    student_kwargs = {"filters": args.filters, "blocks": args.blocks}
    train(get_recipe("kddn-teacher").replace(model_kwargs=teacher_kwargs, steps=args.teacher_steps, **common),
          run_dir=work / "teacher", verbose=0)
    teacher = keras.saving.load_model(work / "teacher" / "model.keras")
    rows = [{"variant": "hazy input", "seed": "-", "psnr": float(np.mean(metrics.psnr(val["hazy"], val["clear"]))),
             "ssim": float(np.mean(metrics.ssim(val["hazy"], val["clear"])))},
            {"variant": "teacher(clear) reconstruction", "seed": "-",
             "psnr": float(np.mean(metrics.psnr(teacher(val["clear"])["dehazed"], val["clear"]))),
             "ssim": float(np.mean(metrics.ssim(teacher(val["clear"])["dehazed"], val["clear"])))}]
    perceptual = ([{"type": "perceptual", "weights_path": args.vgg19_weights}] if args.vgg19_weights else [])
    variants = {"l1": [], "l1+fmil": [{"type": "fmil"}], "l1+wfmil": [{"type": "wfmil"}]}
    for seed in args.seeds:
        for name, extra in variants.items():
            recipe = get_recipe("kddn").replace(
                model_kwargs=student_kwargs, steps=args.steps, seed=seed, **common,
                losses=[{"type": "l1"}] + perceptual + extra,
                step_options={"teacher": str(work / "teacher"), "teacher_input": "clear", "adapters": True})
            result = train(recipe, run_dir=work / f"{name}-{seed}", verbose=0)
            student = keras.saving.load_model(result["keras"])
            out = tf.clip_by_value(student(val["hazy"])["dehazed"], 0.0, 1.0)
            rows.append({"variant": name, "seed": seed, "psnr": float(np.mean(metrics.psnr(out, val["clear"]))),
                         "ssim": float(np.mean(metrics.ssim(out, val["clear"])))})
    table = pd.DataFrame(rows)
    print(f"KDDN student on the sample's 2 held-out pairs, {args.size} px, {args.steps} steps each "
          f"(teacher {args.teacher_steps} steps), filters {args.filters}, lr {args.lr}")
    print(table.to_markdown(index=False, floatfmt=".3f") if _has_tabulate() else table.to_string(index=False))
    means = table[table.seed != "-"].groupby("variant")[["psnr", "ssim"]].mean()
    print("\nmean over seeds:\n" + means.to_string(float_format=lambda v: f"{v:.3f}"))


def _has_tabulate():
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    main()
